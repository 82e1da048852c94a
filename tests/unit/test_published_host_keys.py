"""Which known-hosts lines count as an instance's key for the address the pipeline connects to."""

from __future__ import annotations

from sumpipe.flow.remote import has_published_key

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0mYlJ3n3p1xw2y1z3QkTz1b1k8r0v8mR7xkY0o2nP"


def test_the_line_the_instance_published_at_this_boot_counts() -> None:
    published = f"# filled in by the workers at boot\n10.0.1.5,54.1.2.3 {KEY} i-0abc\n"
    assert has_published_key(published, "54.1.2.3", 22, "i-0abc")
    assert has_published_key(published, "10.0.1.5", 22, "i-0abc")


def test_a_line_from_an_earlier_boot_or_another_instance_does_not() -> None:
    earlier_boot = f"10.0.1.5,54.9.9.9 {KEY} i-0abc\n"  # the public IP changes at every start
    assert not has_published_key(earlier_boot, "54.1.2.3", 22, "i-0abc")
    other_instance = f"10.0.1.5,54.1.2.3 {KEY} i-0def\n"
    assert not has_published_key(other_instance, "54.1.2.3", 22, "i-0abc")
    no_instance_id = f"54.1.2.3 {KEY}\n"  # not published by an instance's boot
    assert not has_published_key(no_instance_id, "54.1.2.3", 22, "i-0abc")


def test_a_non_standard_port_is_named_as_known_hosts_names_it() -> None:
    published = f"[127.77.1.10]:2222 {KEY} i-0abc\n"
    assert has_published_key(published, "127.77.1.10", 2222, "i-0abc")
    assert not has_published_key(published, "127.77.1.10", 22, "i-0abc")
