"""`hydra-deploy rollback`: back to the profile's generation if something else runs, else to
the generation before it; it names the host and the generation."""

from __future__ import annotations

from tests.deploy.conftest import FakeHost

REMOTE = ("--target-host", "root@gpu1")


def test_rollback_after_a_failed_deploy_reactivates_the_profiles_generation(
    fake_host: FakeHost,
) -> None:
    # a deploy whose gate failed and whose re-activation failed too: the host runs the new,
    # unverified system while the profile still names the old one
    fake_host.healthy(False)
    fake_host.fail("stc-old-test", 1)
    code, output = fake_host.deploy("switch", "--flake", "/f#gpu1", *REMOTE, "--gate-timeout", "2")
    assert code == 4, output
    assert fake_host.running() == fake_host.new
    fake_host.fail("stc-old-test", None)

    code, output = fake_host.deploy("rollback", *REMOTE)
    assert code == 0, output
    assert fake_host.running() == fake_host.old
    assert fake_host.profile() == "system-1-link"  # not one generation too far
    assert fake_host.boot_default() == fake_host.old
    assert "generation 1" in output.splitlines()[-1]
    assert "not the profile's generation 1" in output


def test_rollback_goes_to_the_previous_generation_when_the_profiles_runs(
    fake_host: FakeHost,
) -> None:
    code, output = fake_host.deploy("switch", "--flake", "/f#gpu1", *REMOTE)
    assert code == 0, output
    assert fake_host.profile() == "system-2-link"
    code, output = fake_host.deploy("rollback", *REMOTE)
    assert code == 0, output
    assert fake_host.profile() == "system-1-link"
    assert fake_host.running() == fake_host.old
    assert fake_host.boot_default() == fake_host.old
    last = output.splitlines()[-1]
    assert "rolled back to generation 1" in last
    assert "gpu1" in output or "vm" in last


def test_rollback_without_an_older_generation_fails_and_changes_nothing(
    fake_host: FakeHost,
) -> None:
    code, output = fake_host.deploy("rollback")
    assert code == 4, output
    assert "no generation before 1" in output
    assert fake_host.running() == fake_host.old
