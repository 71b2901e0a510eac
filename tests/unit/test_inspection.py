"""`leoflow-staging inspect`: the pod it starts and the listing it prints (pure), and the listing script itself."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leoflow_staging.inspection import (
    LISTING_SCRIPT,
    FileEntry,
    Listing,
    inspect_pod,
    parse_listing,
    pod_name,
    render_listing,
)
from shared import labels


def test_the_pod_reads_only_as_a_non_root_uid_and_ends_by_itself() -> None:
    pod = inspect_pod("tenant", "leoflow-staging-etl-r1-abc", image="img:1", uid=50000,
                      ttl=dt.timedelta(hours=1), instance="prod")
    spec = pod["spec"]
    [container] = spec["containers"]
    assert container["volumeMounts"] == [{"name": labels.VOLUME_NAME, "mountPath": "/staging", "readOnly": True}]
    assert spec["volumes"][0]["persistentVolumeClaim"] == {"claimName": "leoflow-staging-etl-r1-abc",
                                                           "readOnly": True}
    assert spec["securityContext"]["runAsUser"] == 50000 and spec["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"] and spec["activeDeadlineSeconds"] == 3600
    assert labels.OPT_IN not in pod["metadata"]["labels"]  # the webhook never sees it
    assert pod["metadata"]["labels"][labels.INSPECT] == "true"
    assert pod["metadata"]["labels"][labels.INSTANCE] == "prod"
    assert pod["metadata"]["name"] == pod_name("leoflow-staging-etl-r1-abc")
    with pytest.raises(ValueError, match="non-root"):
        inspect_pod("t", "c", image="i", uid=0, ttl=dt.timedelta(hours=1), instance="x")


@given(st.text(min_size=1, max_size=63), st.text(min_size=1, max_size=63))
def test_pod_names_are_valid_and_one_per_claim(a: str, b: str) -> None:
    assert len(pod_name(a)) <= 63 and pod_name(a) == pod_name(a)
    assert (pod_name(a) == pod_name(b)) == (a == b)


def test_the_listing_script_walks_without_following_links(tmp_path: Path) -> None:
    root = tmp_path / "staging"
    (root / "part").mkdir(parents=True)
    (root / "part" / "big").write_bytes(b"x" * 5000)
    (root / "small").write_bytes(b"y")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"z" * 9999)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "private").write_bytes(b"p")
    os.chmod(root / "private", 0o600)
    out = subprocess.run([sys.executable, "-c", LISTING_SCRIPT, "10", str(root)], capture_output=True, text=True,
                         check=True).stdout
    listing = parse_listing(out)
    assert listing.errors == ()
    assert {e.path: e.size for e in listing.entries if not e.link} == {"part/big": 5000, "small": 1, "private": 1}
    assert [e.path for e in listing.entries if e.link] == ["escape"]  # listed as a link, never walked
    assert listing.files == 4
    capped = parse_listing(subprocess.run([sys.executable, "-c", LISTING_SCRIPT, "1", str(root)],
                                          capture_output=True, text=True, check=True).stdout)
    assert len(capped.entries) == 1 and capped.files == 4  # all counted, the first ranked
    assert "(the first 1 walked are ranked)" in render_listing(capped)[0]


def test_render_shows_the_largest_and_the_newest_first() -> None:
    entries = (FileEntry("a", 10, 300.0), FileEntry("b", 3000, 100.0), FileEntry("c\nd", 20, 200.0))
    lines = render_listing(Listing(entries, 3, 3030), top=2)
    assert lines[0] == "3 files, 3.0 KiB on /staging"
    largest, newest = lines[2:4], lines[5:7]
    assert largest[0].endswith("  b") and largest[1].endswith("c\\nd")  # control characters escaped
    assert newest[0].endswith("  a") and newest[1].endswith("c\\nd")


@given(st.lists(st.one_of(st.text(max_size=50), st.builds(json.dumps, st.dictionaries(
    st.sampled_from(["path", "size", "mtime", "files", "bytes", "error", "link"]),
    st.one_of(st.integers(0, 10**12), st.text(max_size=10), st.booleans()), max_size=4))), max_size=8))
def test_any_output_parses_to_a_listing_or_errors_never_a_crash(lines: list[str]) -> None:
    listing = parse_listing("\n".join(lines))  # lines the script never prints become errors, never a crash
    assert listing.files >= 0 and isinstance(render_listing(listing), list)


def test_in_the_shared_claim_mode_the_pod_mounts_the_runs_directory_only_and_is_labelled_with_it() -> None:
    directory = "leoflow-staging-etl-r1-abc"
    pod = inspect_pod("tenant", "team-staging", image="img:1", uid=50000, ttl=dt.timedelta(hours=1),
                      instance="prod", directory=directory)
    assert pod["metadata"]["name"] == pod_name(directory)  # the same pod name as in the claim-per-run mode
    assert pod["metadata"]["labels"][labels.DIRECTORY] == directory
    [mount] = pod["spec"]["containers"][0]["volumeMounts"]
    assert mount == {"name": labels.VOLUME_NAME, "mountPath": "/staging", "readOnly": True, "subPath": directory}
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "team-staging", "readOnly": True}
