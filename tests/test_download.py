"""PhysioNet download (hftri_mimic.ingest.download): against a local basic-auth HTTP server on 127.0.0.1 that
serves a small PhysioNet-style tree (real MIMIC-IV demo files + SHA256SUMS.txt) and honours Range."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
import yaml
from conftest import planned_rules, snakemake, write_config
from physionet_server import PASSWORD, PREFIX, USER, TreeServer
from reference_data import mimic_demo_file

from hftri_mimic.ingest.download import (
    ChecksumError,
    CredentialsError,
    DownloadError,
    download_project,
    masked,
    mirror_dir,
    parse_sha256sums,
    physionet_credentials,
    same_origin,
    select_files,
)

CHUNK = 1024  # client read size in these tests: an interruption after k * CHUNK bytes leaves exactly that

# A small tree with the PhysioNet layouts: two real hosp tables, an ECG record, a DICOM-named file.
TREE_FILES = {
    "hosp/patients.csv.gz": None,  # copied from the real MIMIC-IV demo
    "hosp/admissions.csv.gz": None,
    "files/p1000/p10000032/s40689238/40689238.dat": bytes(range(256)) * 40,
    "files/p1000/p10000032/s40689238/40689238.hea": b"40689238 12 500 5000\n",
    "files/p10/p10002221/s94106955/94106955_0001.dcm": b"DICM" * 3000,
    "README.txt": b"demo tree\n",
}


def write_tree(root: Path) -> dict[str, str]:
    """The served tree and its SHA256SUMS.txt in PhysioNet's format; returns {path: sha256}."""
    sums = {}
    for rel, content in TREE_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            shutil.copyfile(mimic_demo_file(rel), path)
        else:
            path.write_bytes(content)
        sums[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "SHA256SUMS.txt").write_text("".join(f"{digest} {rel}\n" for rel, digest in sums.items()))
    return sums


@pytest.fixture(autouse=True)
def isolated_credentials(tmp_path, monkeypatch):
    """Never read the real ~/.netrc; every test says where its credentials come from."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("NETRC", "PHYSIONET_USERNAME", "PHYSIONET_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return home


@pytest.fixture
def env_credentials(monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    sums = write_tree(root)
    srv = TreeServer(root)
    srv.sums = sums
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fetch(server, dest, **kwargs):
    options = {"retries": 3, "backoff_s": 0, "timeout_s": 10, "chunk_size": CHUNK} | kwargs
    return download_project(server.url, dest, **options)


def tree_holds(dest: Path, needle: bytes) -> list[Path]:
    return [p for p in dest.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_happy_path_mirrors_the_tree_verified_and_never_writes_the_password(
    server, tmp_path, env_credentials, capfd, caplog
):
    dest, manifest, log_file = tmp_path / "mirror", tmp_path / "demo.download.json", tmp_path / "download.log"
    from hftri_mimic.common.logs import to_file

    with to_file(log_file):
        summary = fetch(server, dest, manifest=manifest, workers=3)
    for rel, digest in server.sums.items():
        assert (dest / rel).is_file(), f"{rel} missing: the relative layout must be kept"
        assert hashlib.sha256((dest / rel).read_bytes()).hexdigest() == digest
    assert (dest / "SHA256SUMS.txt").is_file(), "the checksum list is kept beside the files"
    assert not list(dest.rglob("*.part"))
    assert summary.downloaded == len(TREE_FILES) and summary.already_present == 0
    record = json.loads(manifest.read_text())
    assert record["n_files"] == len(TREE_FILES) and record["checksums_verified"] is True
    assert record["files"]["hosp/patients.csv.gz"]["sha256"] == server.sums["hosp/patients.csv.gz"]
    assert record["bytes"] == sum(len((dest / rel).read_bytes()) for rel in TREE_FILES)
    assert "files selected" in log_file.read_text(), "the one-line summary goes to the log"
    out, err = capfd.readouterr()
    secret = PASSWORD.encode()
    for where, text in [("manifest", manifest.read_text()), ("log", log_file.read_text()), ("stdout", out),
                        ("stderr", err), ("logging", caplog.text)]:  # fmt: skip
        assert PASSWORD not in text, f"the password leaked into the {where}"
    assert not tree_holds(dest, secret), "the password leaked into the downloaded tree"

    # A rerun verifies what is there (by checksum) and downloads nothing.
    again = fetch(server, dest, manifest=manifest)
    assert again.downloaded == 0 and again.already_present == len(TREE_FILES)
    assert all(rng is None for _, rng in server.seen)


def test_a_locally_damaged_file_is_detected_and_fetched_again(server, tmp_path, env_credentials):
    dest = tmp_path / "mirror"
    fetch(server, dest)
    damaged = dest / "README.txt"
    damaged.write_bytes(b"demo tree\r\n")  # same size would not matter either: checksums, not sizes
    summary = fetch(server, dest)
    assert summary.downloaded == 1 and damaged.read_bytes() == TREE_FILES["README.txt"]


def test_wrong_password_is_a_clear_error_without_the_password(server, tmp_path, monkeypatch):
    wrong = "wrong-pw-7Hq2-also-secret"
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", wrong)
    with pytest.raises(CredentialsError) as info:
        fetch(server, tmp_path / "mirror")
    message = str(info.value)
    assert "PhysioNet refused the credentials for 127.0.0.1" in message
    assert "~/.netrc" in message and "PHYSIONET_USERNAME / PHYSIONET_PASSWORD" in message
    assert wrong not in message and wrong not in repr(info.value)
    assert info.value.__cause__ is None
    assert len(server.requests_for("SHA256SUMS.txt")) == 1, "a refusal is not retried"


def test_no_credentials_anywhere_is_a_clear_error_before_any_request(server, tmp_path):
    with pytest.raises(CredentialsError, match=re.escape("no PhysioNet credentials for 127.0.0.1")):
        fetch(server, tmp_path / "mirror")
    assert server.seen == []


def test_credentials_in_the_url_are_refused_without_echoing_them(tmp_path, env_credentials):
    with pytest.raises(CredentialsError) as info:
        download_project("https://bob:hunter2@physionet.org/files/mimiciv/3.1/", tmp_path)
    assert "hunter2" not in str(info.value)
    with pytest.raises(CredentialsError, match="plain http"):
        download_project("http://physionet.org/files/mimiciv/3.1/", tmp_path)


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path, env_credentials):
    rel = "files/p1000/p10000032/s40689238/40689238.dat"
    cut = 4 * CHUNK
    server.drop_once[rel] = cut
    dest = tmp_path / "mirror"
    with pytest.raises(DownloadError, match=re.escape(masked(rel))):
        fetch(server, dest, retries=1)  # a run killed mid-transfer
    part = dest / (rel + ".part")
    assert part.stat().st_size == cut, "the bytes received before the drop are kept in .part"
    assert not (dest / rel).exists(), "an unverified file never gets its real name"

    summary = fetch(server, dest, retries=1)
    assert server.requests_for(rel) == [None, f"bytes={cut}-"], "the rerun must continue, not restart"
    assert hashlib.sha256((dest / rel).read_bytes()).hexdigest() == server.sums[rel]
    assert not part.exists()
    assert summary.already_present >= 2 and summary.already_present + summary.downloaded == len(TREE_FILES)


def test_a_drop_within_one_run_is_retried_as_a_resume(server, tmp_path, env_credentials):
    rel = "hosp/admissions.csv.gz"
    server.drop_once[rel] = 2 * CHUNK
    fetch(server, tmp_path / "mirror", retries=2)
    assert server.requests_for(rel) == [None, f"bytes={2 * CHUNK}-"]
    assert hashlib.sha256((tmp_path / "mirror" / rel).read_bytes()).hexdigest() == server.sums[rel]


def test_a_server_that_ignores_range_restarts_from_zero(server, tmp_path, env_credentials):
    rel = "files/p1000/p10000032/s40689238/40689238.dat"
    server.drop_once[rel] = 3 * CHUNK
    server.ignore_range = True  # answers 200 with the whole file to the resume request
    fetch(server, tmp_path / "mirror", retries=2)
    assert server.requests_for(rel) == [None, f"bytes={3 * CHUNK}-"]
    assert hashlib.sha256((tmp_path / "mirror" / rel).read_bytes()).hexdigest() == server.sums[rel]


def test_corrupted_file_fails_its_checksum_by_name_and_leaves_no_file(server, tmp_path, env_credentials):
    rel = "files/p10/p10002221/s94106955/94106955_0001.dcm"
    (server.root / rel).write_bytes(b"DICM" * 2999 + b"BAD!")  # served bytes no longer match SHA256SUMS
    dest, manifest = tmp_path / "mirror", tmp_path / "demo.download.json"
    with pytest.raises(ChecksumError, match=re.escape(masked(rel))) as info:
        fetch(server, dest, manifest=manifest)
    assert server.sums[rel] in str(info.value), "the error names the expected checksum"
    assert not (dest / rel).exists() and not (dest / (rel + ".part")).exists(), "no file under the real name"
    assert (dest / "hosp/patients.csv.gz").is_file(), "the other files are still mirrored"
    assert not manifest.exists(), "no manifest for an incomplete mirror"
    assert len(server.requests_for(rel)) == 1, "a full download that mismatches is not retried"


def test_netrc_credentials_work(server, tmp_path, isolated_credentials):
    netrc = isolated_credentials / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login {USER}\n  password {PASSWORD}\n")
    netrc.chmod(0o600)
    credentials = physionet_credentials(server.url)
    assert credentials.source == "netrc" and PASSWORD not in repr(credentials)
    summary = fetch(server, tmp_path / "mirror")
    assert summary.downloaded == len(TREE_FILES)


def test_environment_takes_precedence_and_half_set_environment_is_an_error(server, isolated_credentials, monkeypatch):
    (isolated_credentials / ".netrc").write_text("machine 127.0.0.1 login nobody password nothing\n")
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    with pytest.raises(CredentialsError, match="PHYSIONET_PASSWORD is not set"):
        physionet_credentials(server.url)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    assert physionet_credentials(server.url).source == "environment"


def test_include_patterns_and_file_list_select_the_right_files(server, tmp_path, env_credentials):
    sums = server.sums
    assert select_files(sums, ["hosp/*.csv.gz"]) == ["hosp/patients.csv.gz", "hosp/admissions.csv.gz"]
    assert select_files(sums, ["files/**"]) == [r for r in sums if r.startswith("files/")]
    assert select_files(sums, ["**/*.hea"]) == ["files/p1000/p10000032/s40689238/40689238.hea"]
    assert select_files(sums, ["*.txt"]) == ["README.txt"], "* must not cross folders"
    with pytest.raises(DownloadError, match="hosp/nothing"):
        select_files(sums, ["hosp/nothing*"])

    file_list = tmp_path / "cohort_dicoms.txt"
    file_list.write_text("# cohort DICOMs\nfiles/p10/p10002221/s94106955/94106955_0001.dcm\n\n")
    dest = tmp_path / "mirror"
    summary = fetch(server, dest, include=["README.txt"], file_list=file_list)
    assert sorted(summary.files) == ["README.txt", "files/p10/p10002221/s94106955/94106955_0001.dcm"]
    bookkeeping = {".hftri-verified.parquet", ".hftri-sums.lock"}
    assert sorted(
        p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name not in bookkeeping
    ) == [
        "README.txt",
        "SHA256SUMS.txt",
        "files/p10/p10002221/s94106955/94106955_0001.dcm",
    ]
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("files/p99/missing.dcm\n")
    with pytest.raises(DownloadError, match=re.escape("not in SHA256SUMS.txt")):
        fetch(server, dest, include=[], file_list=unknown)


def test_a_server_that_always_fails_is_given_up_after_the_configured_retries(server, tmp_path, env_credentials):
    rel = "README.txt"
    server.always_drop.add(rel)
    with pytest.raises(DownloadError, match=re.escape("README.txt: gave up after 3 tries")):
        fetch(server, tmp_path / "mirror", include=[rel], retries=3)
    assert len(server.requests_for(rel)) == 3


def test_an_unreachable_server_is_given_up_after_the_configured_retries(tmp_path, env_credentials):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=re.escape("SHA256SUMS.txt: gave up after 2 tries")) as info:
        download_project(f"http://127.0.0.1:{port}/files/x/1/", tmp_path, retries=2, backoff_s=0, timeout_s=2)
    assert PASSWORD not in str(info.value)


def test_the_real_physionet_checksum_file_parses():
    sums = parse_sha256sums(mimic_demo_file("SHA256SUMS.txt").read_text().splitlines())
    assert len(sums) == 34
    real = mimic_demo_file("hosp/admissions.csv.gz")
    assert sums["hosp/admissions.csv.gz"] == hashlib.sha256(real.read_bytes()).hexdigest()
    assert parse_sha256sums([f"{'a' * 64}  two/spaces.csv"]) == {"two/spaces.csv": "a" * 64}
    with pytest.raises(DownloadError, match="line 1"):
        parse_sha256sums([f"{'a' * 64} ../escape.txt"])


def test_mirror_dir_follows_the_wget_layout():
    assert mirror_dir("resources/physionet", "https://physionet.org/files/mimiciv/3.1/") == Path(
        "resources/physionet/physionet.org/files/mimiciv/3.1"
    )


def test_snakemake_download_target_mirrors_and_is_not_part_of_all(server, tmp_path, env_credentials):
    workdir = tmp_path / "run"
    workdir.mkdir()
    file_list = workdir / "dicoms.txt"
    file_list.write_text("files/p10/p10002221/s94106955/94106955_0001.dcm\n")
    write_config(
        workdir,
        download={
            "dest_root": "resources/physionet",
            "timeout_s": 10,
            "retries": 2,
            "backoff_s": 0,
            "reverify": False,
            "projects": {
                "demo-hosp": {
                    "url": server.url,
                    "access": "credentialed",
                    "include": ["hosp/*.csv.gz"],
                    "file_list": None,
                    "cohort_files": None,
                },
                "demo-echo": {
                    "url": server.url,
                    "access": "credentialed",
                    "include": ["README.txt"],
                    "file_list": str(file_list),
                    "cohort_files": None,
                },
            },
        },
    )
    proc = snakemake(workdir, "--cores", "2", "download", timeout=120)
    dest = workdir / "resources/physionet/127.0.0.1/files/demo/2.2"
    assert (dest / "hosp/patients.csv.gz").is_file() and (dest / "files/p10/p10002221/s94106955").is_dir()
    record = json.loads((workdir / "resources/physionet/demo-hosp.download.json").read_text())
    assert record["n_files"] == 2 and sorted(record["files"]) == ["hosp/admissions.csv.gz", "hosp/patients.csv.gz"]
    assert json.loads((workdir / "resources/physionet/demo-echo.download.json").read_text())["n_files"] == 2
    assert (workdir / "results/logs/download/demo-hosp.log").is_file()
    # downloads are patient data: private to the user, though snakemake started with umask 002 (docs/SECURITY.md)
    downloaded = [workdir / "resources", *(workdir / "resources").rglob("*")]
    assert len(downloaded) > 8 and not [p for p in downloaded if p.lstat().st_mode & 0o077]
    for path in workdir.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), f"the password leaked into {path}"
    assert PASSWORD not in proc.stdout + proc.stderr
    assert PASSWORD not in yaml.safe_dump(yaml.safe_load((workdir / "config.yaml").read_text()))

    dry = snakemake(workdir, "-n", "all", timeout=120)
    rules = planned_rules(dry)
    assert rules and not rules & {"download", "download_project"}, f"`all` must not download: {rules}"


def test_credentials_in_a_configured_url_fail_before_any_job_without_echoing_them(tmp_path):
    write_config(
        tmp_path,
        download={
            "dest_root": "resources/physionet",
            "timeout_s": 10,
            "retries": 1,
            "backoff_s": 0,
            "reverify": False,
            "projects": {"mimiciv": {"url": "https://bob:hunter2@physionet.org/files/mimiciv/3.1/",
                                     "access": "credentialed", "include": None, "file_list": None,
                                     "cohort_files": None}},
        },
    )  # fmt: skip
    proc = snakemake(tmp_path, "-n", "all", check=False, timeout=120)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "download.projects.mimiciv.url" in message, message[-2000:]
    assert "hunter2" not in message


# --- redirects: credentials go only to the configured origin --------------------------------------------------


@pytest.fixture
def other_server(tmp_path):
    """A second server on another port of 127.0.0.1 (another origin) serving the same tree."""
    root = tmp_path / "other"
    write_tree(root)
    srv = TreeServer(root)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("rel", ["README.txt", "SHA256SUMS.txt"])
def test_a_redirect_to_another_origin_is_refused_and_gets_no_credentials(server, other_server, tmp_path, rel):
    """requests alone would follow it and, for a new host, re-add credentials from ~/.netrc (a `default` entry
    matches any host): the redirect is refused before any request reaches the other origin."""
    netrc_file = tmp_path / "home" / ".netrc"
    netrc_file.write_text(f"default login {USER} password {PASSWORD}\n")
    netrc_file.chmod(0o600)
    server.redirects[rel] = other_server.url + rel
    with pytest.raises(DownloadError, match="another scheme or host; refused") as info:
        fetch(server, tmp_path / "mirror")
    assert PASSWORD not in str(info.value) and "http://127.0.0.1" in str(info.value)
    assert other_server.authorized == [], "nothing may be sent to the other origin"


def test_a_redirect_within_the_configured_origin_is_followed_with_credentials(server, tmp_path, env_credentials):
    (server.root / "moved").mkdir()
    shutil.copyfile(server.root / "README.txt", server.root / "moved/README.txt")
    server.redirects["README.txt"] = PREFIX + "moved/README.txt"  # a relative Location, same origin
    fetch(server, tmp_path / "mirror")
    assert (tmp_path / "mirror/README.txt").read_bytes() == (server.root / "README.txt").read_bytes()
    assert ("moved/README.txt", True) in server.authorized


def test_endless_redirects_are_an_error(server, tmp_path, env_credentials):
    server.redirects["README.txt"] = PREFIX + "README.txt"
    with pytest.raises(DownloadError, match="more than 5 redirects"):
        fetch(server, tmp_path / "mirror")


def test_same_origin_compares_scheme_host_and_port():
    assert same_origin("https://physionet.org/files/x/1/", "https://PhysioNet.org:443/files/y")
    assert not same_origin("https://physionet.org/files/x/1/", "http://physionet.org/files/x/1/a")  # downgrade
    assert not same_origin("https://physionet.org/", "https://physionet.org.evil.example/")
    assert not same_origin("http://127.0.0.1:8000/", "http://127.0.0.1:8001/")


# --- credentials and paths that must be refused before any request ---------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_netrc_readable_by_others_is_refused(server, isolated_credentials, mode):
    netrc_file = isolated_credentials / ".netrc"
    netrc_file.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc_file.chmod(mode)
    with pytest.raises(CredentialsError, match="readable by other users") as info:
        physionet_credentials(server.url)
    assert PASSWORD not in str(info.value) and "chmod 600" in str(info.value)


def test_a_netrc_owned_by_another_user_is_refused(server, isolated_credentials):
    netrc_file = isolated_credentials / ".netrc"
    netrc_file.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc_file.chmod(0o600)
    os.chown(netrc_file, 65534, 65534)  # nobody (the tests run as root on CI)
    with pytest.raises(CredentialsError, match="belongs to another user"):
        physionet_credentials(server.url)


@pytest.mark.parametrize("password", ["pass\u20acword", "p\u0101ss"])
def test_a_password_outside_latin_1_is_refused_quoting_nothing(server, monkeypatch, password):
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", password)
    with pytest.raises(CredentialsError, match="outside Latin-1") as info:
        physionet_credentials(server.url)
    assert not any(c in str(info.value) for c in password if ord(c) > 255), "the message quotes a character"
    monkeypatch.setenv("PHYSIONET_PASSWORD", "pässwörd")  # Latin-1 letters are fine
    assert physionet_credentials(server.url).password == "pässwörd"


@pytest.mark.parametrize("path", ["/files/../../etc/", "/files/x/%2e%2e/y/", "/files/./x/"])
def test_dot_segments_in_a_project_url_are_refused(path):
    with pytest.raises(DownloadError, match=r"'\.' or '\.\.' path segments"):
        download_project(f"https://physionet.org{path}", Path("/nonexistent"), retries=1)


def test_a_checksum_list_that_does_not_parse_leaves_the_previous_one(server, tmp_path, env_credentials):
    dest = tmp_path / "mirror"
    fetch(server, dest)
    good = (dest / "SHA256SUMS.txt").read_bytes()
    (server.root / "SHA256SUMS.txt").write_text("not a checksum line\n")
    fetch(server, dest)  # the list fetched whole before is reused: a project version never changes
    with pytest.raises(DownloadError, match="line 1"):
        fetch(server, dest, reverify=True)  # fetched again
    assert (dest / "SHA256SUMS.txt").read_bytes() == good
    assert not list(dest.glob("SHA256SUMS.txt*.part")), "a list that does not parse is not continued by a rerun"


# --- size cap ------------------------------------------------------------------------------------------------


def test_a_file_over_the_size_cap_stops_the_download_and_leaves_no_partial_file(server, tmp_path, env_credentials):
    dest = tmp_path / "mirror"
    sizes = {rel: (server.root / rel).stat().st_size for rel in TREE_FILES}
    cap = sorted(sizes.values())[-1] - 1  # the largest file is one byte over
    largest = max(sizes, key=sizes.get)
    with pytest.raises(DownloadError, match=r": .* exceeds the per-file cap .*download\.max_file_gb"):
        fetch(server, dest, max_file_gb=cap / 1e9, workers=1)
    # other files in flight when the run stopped keep their .part (a rerun resumes them); the capped one is gone
    assert not (dest / largest).exists() and not (dest / f"{largest}.part").exists()
    summary = fetch(server, dest, max_file_gb=(cap + 1) / 1e9)  # at the largest file's size: the tree downloads
    assert summary.downloaded + summary.already_present == len(TREE_FILES)


def test_a_server_that_sends_more_than_it_announced_is_cut_at_the_cap(server, tmp_path, env_credentials):
    """No Content-Length to go by (chunked answers): the cap is enforced on the bytes as they arrive."""
    dest = tmp_path / "mirror"
    server.hide_length = True
    sizes = {rel: (server.root / rel).stat().st_size for rel in TREE_FILES}
    with pytest.raises(DownloadError, match="exceeds the per-file cap"):
        fetch(server, dest, max_file_gb=(max(sizes.values()) - 1) / 1e9, workers=1)
    largest = max(sizes, key=sizes.get)
    assert not (dest / largest).exists() and not (dest / f"{largest}.part").exists()
    summary = fetch(server, dest, max_file_gb=None)  # no cap and no Content-Length: the tree downloads
    assert summary.downloaded + summary.already_present == len(TREE_FILES)


# --- verify once, cached checksum lists, open access, the plan before the transfers ----------------------------------


def test_a_rerun_hashes_nothing_and_a_changed_file_is_caught(server, tmp_path, env_credentials):
    dest = tmp_path / "mirror"
    first = fetch(server, dest)
    assert first.files_hashed == len(TREE_FILES) + 1, "each download and the checksum list are hashed once"
    sums_requests = len(server.requests_for("SHA256SUMS.txt"))

    again = fetch(server, dest)
    assert (again.files_hashed, again.bytes_hashed) == (0, 0), "an unchanged tree is not read again"
    assert again.already_present == len(TREE_FILES) and again.downloaded == 0
    assert len(server.requests_for("SHA256SUMS.txt")) == sums_requests, "the checksum list is reused"

    changed = dest / "hosp/admissions.csv.gz"
    changed.write_bytes(changed.read_bytes() + b"\0")  # new size and mtime
    third = fetch(server, dest)
    assert (third.files_hashed, third.downloaded) == (2, 1), "the changed file is hashed, caught and fetched again"
    assert hashlib.sha256(changed.read_bytes()).hexdigest() == server.sums["hosp/admissions.csv.gz"]

    # Other bytes with the size and mtime set back (as `cp -p` or `touch -d` would): the inode's change time differs.
    before = changed.stat()
    data = bytearray(changed.read_bytes())
    data[100] ^= 0xFF
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert changed.stat().st_mtime_ns == before.st_mtime_ns and changed.stat().st_size == before.st_size
    caught = fetch(server, dest)
    assert (caught.files_hashed, caught.downloaded) == (2, 1)
    assert hashlib.sha256(changed.read_bytes()).hexdigest() == server.sums["hosp/admissions.csv.gz"]

    forced = fetch(server, dest, reverify=True)  # bit rot changes nothing a stat sees: only re-hashing finds it
    assert forced.files_hashed == len(TREE_FILES) + 1 and forced.downloaded == 0  # every file and the list
    assert len(server.requests_for("SHA256SUMS.txt")) == sums_requests + 1, "reverify fetches the list again"


def test_the_verified_cache_survives_a_damaged_cache_file(server, tmp_path, env_credentials):
    dest = tmp_path / "mirror"
    fetch(server, dest)
    (dest / ".hftri-verified.parquet").write_bytes(b"not parquet")
    summary = fetch(server, dest)  # a damaged cache costs a re-hash, not a failure
    assert summary.already_present == len(TREE_FILES) and summary.files_hashed == len(TREE_FILES) + 1
    assert fetch(server, dest).files_hashed == 0


def test_an_interrupted_checksum_list_download_resumes(server, tmp_path, env_credentials):
    dest = tmp_path / "mirror"
    cut = 100
    server.drop_once["SHA256SUMS.txt"] = cut
    with pytest.raises(DownloadError, match=re.escape("SHA256SUMS.txt: gave up after 1 tries")):
        fetch(server, dest, retries=1)
    assert (dest / "SHA256SUMS.txt.part").stat().st_size == cut
    assert not (dest / "SHA256SUMS.txt").exists()
    fetch(server, dest, retries=1)
    assert server.requests_for("SHA256SUMS.txt") == [None, f"bytes={cut}-"], "the rerun continues the list"
    assert (dest / "SHA256SUMS.txt").read_bytes() == (server.root / "SHA256SUMS.txt").read_bytes()
    fetch(server, dest, retries=1)
    assert len(server.requests_for("SHA256SUMS.txt")) == 2, "a list fetched whole is not fetched again"


def test_open_access_needs_no_credentials_and_sends_none(server, tmp_path, isolated_credentials, monkeypatch):
    import hftri_mimic.ingest.download as download

    def no_reading(*args, **kwargs):
        raise AssertionError("credentials were looked up for an open-access project")

    monkeypatch.setattr(download, "physionet_credentials", no_reading)
    netrc_file = isolated_credentials / ".netrc"
    netrc_file.write_text(f"default login {USER} password {PASSWORD}\n")  # requests alone would send this
    netrc_file.chmod(0o600)
    server.open_access = True
    summary = fetch(server, tmp_path / "mirror", access="open")
    assert summary.downloaded == len(TREE_FILES)
    assert server.authorized and not any(sent for _, sent in server.authorized), "credentials sent to an open project"

    server.open_access = False  # a project that does ask for a login, configured as open
    with pytest.raises(CredentialsError, match="configured as open access") as info:
        fetch(server, tmp_path / "other", access="open")
    assert PASSWORD not in str(info.value)


def test_the_plan_counts_and_sizes_what_is_fetched_before_any_transfer(server, tmp_path, env_credentials, caplog):
    dest = tmp_path / "mirror"
    fetch(server, dest, include=["README.txt"])
    files_bytes = sum((server.root / rel).stat().st_size for rel in TREE_FILES if rel != "README.txt")
    server.heads.clear()
    server.seen.clear()
    with caplog.at_level("INFO", logger="hftri_mimic.ingest.download"):
        planned = fetch(server, dest, dry_run=True)
    assert planned.to_fetch == len(TREE_FILES) - 1 and planned.bytes_to_fetch == files_bytes
    assert sorted(server.heads) == sorted(rel for rel in TREE_FILES if rel != "README.txt")
    assert server.seen == [], "a dry run fetches nothing (the checksum list is reused)"
    plan_line = next(r.getMessage() for r in caplog.records if "to fetch" in r.getMessage())
    assert (
        f"1 ({TREE_FILES['README.txt'].__len__()} B) present and verified, {len(TREE_FILES) - 1} to fetch" in plan_line
    )
    assert not list(dest.rglob("*.part")) and not (dest / "hosp").exists()
