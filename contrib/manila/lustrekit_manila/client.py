"""A thin client for `lustrekit share --json`: one subprocess per call, the documented JSON
schema back, and lustrekit's error codes raised as typed exceptions."""

import json
import subprocess


class LustrekitError(Exception):
    """A failed lustrekit call, with its stable error code (docs/json-schema.md)."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotFound(LustrekitError):
    pass


class Conflict(LustrekitError):
    pass


class InvalidArgument(LustrekitError):
    pass


_BY_CODE = {
    "not_found": NotFound,
    "conflict": Conflict,
    "busy": Conflict,
    "access_conflict": Conflict,
    "shrink_below_usage": Conflict,
    "invalid_argument": InvalidArgument,
}


class LustrekitClient:
    def __init__(self, binary="lustrekit", config=None, timeout=300):
        self.binary = binary
        self.config = config
        self.timeout = timeout

    def _run(self, *args):
        argv = [self.binary]
        if self.config:
            argv += ["--config", self.config]
        argv += ["--json", "share", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        try:
            body = json.loads(proc.stdout) if proc.stdout.strip() else None
        except json.JSONDecodeError as exc:
            raise LustrekitError("error", f"unreadable output of {argv!r}: {exc}") from exc
        if proc.returncode != 0:
            err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            code = err.get("code", "error")
            message = err.get("message") or proc.stderr.strip()
            raise _BY_CODE.get(code, LustrekitError)(code, message)
        return body

    def create(self, name, size_gib, labels=None):
        args = ["create", name, "--size", f"{size_gib}G"]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        return self._run(*args)

    def delete(self, name, trash=False):
        return self._run("delete", name, *(["--trash"] if trash else []))

    def extend(self, name, size_gib):
        return self._run("extend", name, "--size", f"{size_gib}G")

    def shrink(self, name, size_gib):
        return self._run("shrink", name, "--size", f"{size_gib}G")

    def show(self, name):
        return self._run("show", name)

    def allow(self, name, to, level):
        return self._run("access", "allow", name, "--to", to, "--level", level)

    def deny(self, name, to):
        return self._run("access", "deny", name, "--to", to)

    def access_list(self, name):
        return self._run("access", "list", name)

    def capacity(self):
        return self._run("capacity")

    def ensure(self):
        return self._run("ensure")
