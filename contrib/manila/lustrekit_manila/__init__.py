"""OpenStack Manila driver shim for lustrekit: Manila's share driver calls, carried out by the
`lustrekit share ... --json` command line (its schema is docs/json-schema.md)."""
