"""OpenStack Manila share driver on lustrekit: `lustrekit_manila.driver.LustrekitShareDriver`,
a drop-in for Manila 23's Lustre driver whose every operation is `lustrekit share ... --json`
(the schema of docs/json-schema.md)."""
