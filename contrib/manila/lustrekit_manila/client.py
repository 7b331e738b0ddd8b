"""A client for `lustrekit share ... --json`: one bounded subprocess per call, the documented
JSON schema back (docs/json-schema.md), and lustrekit's stable error codes raised as
:class:`LustrekitError` with that code. Nothing here knows Manila.
"""

import json
import logging
import os
import signal
import subprocess

LOG = logging.getLogger(__name__)

# The codes of docs/json-schema.md, "Errors".
NOT_FOUND = "not_found"
INVALID_ARGUMENT = "invalid_argument"
CONFIG = "config"
CONFLICT = "conflict"
BUSY = "busy"
ACCESS_CONFLICT = "access_conflict"
SHRINK_BELOW_USAGE = "shrink_below_usage"
PROJECT_IDS_IN_USE = "project_ids_in_use"
PROJECT_IDS_EXHAUSTED = "project_ids_exhausted"
TIMEOUT = "timeout"
NOT_RUN = "not_run"


class LustrekitError(Exception):
    """A failed lustrekit call, with its stable error code and message."""

    def __init__(self, code, message, argv=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.argv = argv


def json_documents(text):
    """Every JSON document in `text`, in order (lustrekit prints one; `ensure` with problems
    prints its report and then the error)."""
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


def gib(size_gib):
    """A Manila size (whole GiB, at least 1) as a lustrekit size argument."""
    return f"{int(size_gib)}GiB"


class LustrekitClient:
    """Runs `<binary> --config <config> --json share ...`."""

    def __init__(self, binary, config, timeout):
        self.binary = binary
        self.config = config
        self.timeout = timeout

    def argv(self, *args):
        return [self.binary, "--config", self.config, "--json", "share", *args]

    def _run(self, *args, allow_report_on_failure=False):
        argv = self.argv(*args)
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv, never a shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # so a timeout kills what it started too
            )
        except OSError as exc:
            raise LustrekitError(NOT_RUN, f"cannot run {self.binary!r}: {exc}", argv) from exc
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise LustrekitError(
                TIMEOUT, f"{' '.join(argv)} did not finish within {self.timeout} s; killed", argv
            ) from None
        if stderr.strip():
            LOG.debug("lustrekit %s: %s", " ".join(args), stderr.strip())
        try:
            docs = json_documents(stdout)
        except json.JSONDecodeError as exc:
            raise LustrekitError(
                "error", f"unreadable output of {' '.join(argv)}: {exc}: {stdout[:200]!r}", argv
            ) from exc
        if proc.returncode == 0:
            if len(docs) != 1:
                raise LustrekitError("error", f"{' '.join(argv)} printed {len(docs)} JSON documents", argv)
            return docs[0]
        error = next((d["error"] for d in docs if isinstance(d, dict) and isinstance(d.get("error"), dict)), {})
        if allow_report_on_failure and docs and not (isinstance(docs[0], dict) and "error" in docs[0]):
            return docs[0]
        code = error.get("code") or "error"
        message = error.get("message") or stderr.strip() or f"exit status {proc.returncode}"
        raise LustrekitError(code, message, argv)

    # ---- the share commands (docs/json-schema.md) ----

    def create(self, name, size_gib, labels=None):
        args = ["create", name, "--size", gib(size_gib)]
        for key, value in sorted((labels or {}).items()):
            args += ["--label", f"{key}={value}"]
        return self._run(*args)

    def delete(self, name, trash=False, ttl_hours=None):
        args = ["delete", name]
        if trash:
            args.append("--trash")
            if ttl_hours is not None:
                args += ["--ttl-hours", str(int(ttl_hours))]
        return self._run(*args)

    def extend(self, name, size_gib):
        return self._run("extend", name, "--size", gib(size_gib))

    def shrink(self, name, size_gib):
        return self._run("shrink", name, "--size", gib(size_gib))

    def show(self, name):
        return self._run("show", name)

    def list(self):
        return self._run("list")

    def allow(self, name, to, level):
        return self._run("access", "allow", name, "--to", to, "--level", level)

    def deny(self, name, to):
        return self._run("access", "deny", name, "--to", to)

    def access_list(self, name):
        return self._run("access", "list", name)

    def adopt(self, name):
        """Takes over the share directory `name` that has no lustrekit record (one made by
        Manila's own Lustre driver): the Share, as `create` prints it."""
        return self._run("adopt", name)

    def capacity(self):
        return self._run("capacity")

    def ensure(self):
        """The ensure report; exit 1 with a report means some shares have problems."""
        return self._run("ensure", allow_report_on_failure=True)
