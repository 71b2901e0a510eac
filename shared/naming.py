"""Pure naming rules: label-safe ids and the run's deterministic PVC name (contracts 1 and 3)."""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata

PVC_PREFIX = "leoflow-staging-"
MAX_NAME = 63
HASH_LEN = 26  # base32 digits of sha256 over the raw (dag_id, run_id) pair: 130 bits
MAX_ID_LEN = 250  # the orchestrator's id columns are VARCHAR(250)

_LABEL_OK = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_BAD_CHARS = re.compile(r"[^-A-Za-z0-9_.]")
_DNS_BAD_CHARS = re.compile(r"[^a-z0-9]+")


def id_problem(value: str) -> str | None:
    """Why a raw dag_id or run_id cannot be recorded (the columns are VARCHAR(250), text has no
    control characters), or None. Admission and the GC's adoption of strays apply the same rule."""
    if not value.strip():
        return "is empty"
    if len(value) > MAX_ID_LEN:
        return f"is longer than {MAX_ID_LEN} characters"
    if value.isascii() and value.isprintable():  # the common case, without a look-up per character
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        return "contains control characters"
    return None


def pair_hash(dag_id: str, run_id: str, length: int = HASH_LEN) -> str:
    """A stable lowercase base32 digest of the raw pair (``a-z2-7``, 5 bits a character)."""
    # The NUL separator keeps ("a-b","c") and ("a","b-c") apart.
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:length]


def is_label_value(value: str) -> bool:
    """True when ``value`` is a valid Kubernetes label value (<= 63 chars, alnum at both ends)."""
    return len(value) <= 63 and bool(_LABEL_OK.match(value))


def label_safe(value: str) -> str:
    """A valid label value for ``value``: itself when already valid, else a sanitised form
    with a hash of the raw value appended (Airflow's make_safe_label_value approach)."""
    if is_label_value(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    cleaned = _LABEL_BAD_CHARS.sub("-", value)[: 63 - len(digest) - 1].strip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


def _dns_part(value: str) -> str:
    return _DNS_BAD_CHARS.sub("-", value.lower()).strip("-")


def _compose(dag_id: str, run_id: str, digest: str) -> str:
    budget = MAX_NAME - len(PVC_PREFIX) - len(digest)  # room for "<dag>-<run>-"
    dag, run = _dns_part(dag_id), _dns_part(run_id)
    # Share the room fairly: each part gets half, a short part lends its leftover to the other.
    half = (budget - 2) // 2
    dag_room = max(half, budget - 2 - len(run)) if run else budget - 1
    dag = dag[:dag_room].rstrip("-")
    run_room = budget - (len(dag) + 1 if dag else 0) - 1
    run = run[: max(run_room, 0)].rstrip("-")
    parts = [p for p in (dag, run) if p]
    return PVC_PREFIX + "".join(f"{p}-" for p in parts) + digest


def pvc_name(dag_id: str, run_id: str) -> str:
    """``leoflow-staging-<dag part>-<run part>-<hash>``: a DNS-1123 label of <= 63 characters,
    deterministic for the pair, readable parts from the ids, unique through a 130-bit hash."""
    return _compose(dag_id, run_id, pair_hash(dag_id, run_id))


def is_staging_pvc_name(name: str) -> bool:
    """True when ``name`` is in this product's reserved PVC name space."""
    return name.startswith(PVC_PREFIX)
