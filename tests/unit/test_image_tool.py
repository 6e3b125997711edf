"""tools/image.py's pure parts: which Debian mirror the stand-in base comes from, and its cache key."""

from __future__ import annotations

from pathlib import Path

from tools import image


def test_mirror_lines_come_from_apts_bookworm_sources_in_both_formats(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example.org/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://mirror.example.org/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
    )
    one_line = tmp_path / "extra.list"
    one_line.write_text(
        "deb [signed-by=/k.gpg] http://security.example.org/debian-security bookworm-security main\n"
        "deb https://packages.example.com/apt cloud-sdk-bookworm main\n"  # not a Debian suite
        "# deb http://old.example.org/debian bookworm main\n"
    )
    assert image.apt_mirror_lines([deb822, one_line]) == [
        "deb http://mirror.example.org/debian bookworm main",
        "deb http://mirror.example.org/debian bookworm-updates main",
        "deb http://security.example.org/debian-security bookworm-security main",
    ]


def test_without_a_bookworm_source_the_mirror_is_deb_debian_org(tmp_path: Path) -> None:
    other = tmp_path / "ubuntu.list"
    other.write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert image.apt_mirror_lines([other, tmp_path / "missing.list"]) == list(image.DEFAULT_MIRRORS)


def test_the_base_cache_key_follows_the_mirrors() -> None:
    a = image.standin_key(["deb http://a.example/debian bookworm main"])
    assert a == image.standin_key(["deb http://a.example/debian bookworm main"])
    assert a != image.standin_key(["deb http://b.example/debian bookworm main"])
    assert len(a) == 16


def test_the_engine_settings_stay_in_the_project_cache() -> None:
    env = image.engine_env()
    for name in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF", "TMPDIR"):
        assert Path(env[name]).is_relative_to(image.ENGINE)
    storage = Path(env["CONTAINERS_STORAGE_CONF"]).read_text()
    assert f'graphroot = "{image.ENGINE / "storage"}"' in storage
    assert 'runtime = "runc"' in Path(env["CONTAINERS_CONF"]).read_text()


def test_the_image_tag_is_the_project_version() -> None:
    assert image.image_ref() == f"localhost/fleet-webhook:{image.version()}"
