"""The shared-claim mode's settings: what they require of each other, and clear errors."""

from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.settings import from_env

P = "LEOFLOW_STAGING_"


def test_the_shared_claim_mode_needs_the_image_and_a_class_needs_the_claims_name() -> None:
    with pytest.raises(SettingsError, match="IMAGE is not"):
        from_env({P + "SHARED_CLAIM": "team-staging"})
    with pytest.raises(SettingsError, match="SHARED_CLAIM is not"):
        from_env({P + "SHARED_CLAIM_CLASS": "nfs", P + "IMAGE": "i"})
    with pytest.raises(SettingsError, match="PREPARE_CLAIMS is on but"):
        from_env({P + "PREPARE_CLAIMS": "true"})
    with pytest.raises(SettingsError, match="expected a PVC name"):
        from_env({P + "SHARED_CLAIM": "Team_Staging", P + "IMAGE": "i"})
    ok = from_env({P + "SHARED_CLAIM": "team-staging", P + "IMAGE": "i", P + "SHARED_CLAIM_CLASS": "nfs",
                   P + "SHARED_CLAIM_SIZE": "2Ti", P + "CLEANUP_WAIT": "30"})
    assert (ok.shared_claim, ok.shared_claim_class, ok.shared_claim_size, ok.cleanup_wait) == (
        "team-staging", "nfs", "2Ti", 30.0)


@pytest.mark.parametrize("raw", ["{", "[]", '{"cpu": "1"}'])
def test_cleanup_resources_must_be_requests_and_limits(raw: str) -> None:
    with pytest.raises(SettingsError, match="CLEANUP_RESOURCES"):
        from_env({P + "CLEANUP_RESOURCES": raw})
