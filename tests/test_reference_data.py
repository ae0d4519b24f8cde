"""The reference-data fetcher (reference_data.py): mirror first, pooch download into the cache against the pinned
SHA-256, a named skip when neither works, a failure instead of the skip under CI. The 'network' here is a real
HTTP server on 127.0.0.1 serving a copy of the pinned files."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import reference_data
from reference_data import (
    CACHE_ENV,
    MIRROR_ENV,
    PTB_DIAGNOSTIC,
    REQUIRE_ENV,
    Dataset,
    ReferenceDataMissing,
    reference_file,
    sha256,
)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[Path, str, list[str]]]:
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL, paths requested)."""
    root = tmp_path / "server"
    root.mkdir()
    requested: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/", requested
    server.shutdown()
    server.server_close()


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """No mirror but an empty one named by the environment variable, an empty cache, skips allowed."""
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(empty_mirror))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    monkeypatch.setattr(reference_data, "REPO", tmp_path / "clone" / "repo")  # no ../shared beside this "clone"
    return empty_mirror


def small_dataset(base_url: str | None, files: dict[str, bytes]) -> Dataset:
    import hashlib

    return Dataset(
        name="test data",
        mirror_dir="data/test-data",
        base_url=base_url,
        files={rel: hashlib.sha256(content).hexdigest() for rel, content in files.items()},
    )


FILES = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256))}


def test_every_pin_matches_the_mirror_ci_lays_beside_the_repository():
    """The pins are the published files' hashes: each pinned file of the shared mirror has exactly that hash."""
    for dataset in (reference_data.MIMIC_IV_DEMO, PTB_DIAGNOSTIC, reference_data.MIMIC_IV_ECG):
        for rel, digest in dataset.files.items():
            assert sha256(reference_file(dataset, rel)) == digest
    sums = reference_file(reference_data.MIMIC_IV_DEMO, "SHA256SUMS.txt").read_text().split("\n")
    published = {line.split()[1]: line.split()[0] for line in sums if line.strip()}
    pinned = reference_data.MIMIC_IV_DEMO.files
    assert {rel: published[rel] for rel in pinned if rel != "SHA256SUMS.txt"} == {
        rel: digest for rel, digest in pinned.items() if rel != "SHA256SUMS.txt"
    }
    assert len([rel for rel in pinned if rel.startswith("hosp/")]) == 22


def test_a_mirror_named_by_the_environment_variable_is_used_first(isolated, served):
    _, base_url, requested = served
    dataset = small_dataset(base_url, FILES)
    for rel, content in FILES.items():
        (isolated / dataset.mirror_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (isolated / dataset.mirror_dir / rel).write_bytes(content)
    assert reference_file(dataset, "sub/b.bin") == isolated / dataset.mirror_dir / "sub/b.bin"
    assert requested == [], "a verified mirror file must not be downloaded"


def test_a_missing_or_altered_mirror_file_is_downloaded_into_the_cache_and_verified(isolated, served, tmp_path):
    server_root, base_url, requested = served
    dataset = small_dataset(base_url, FILES)
    for rel, content in FILES.items():
        (server_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (server_root / rel).write_bytes(content)
    altered = isolated / dataset.mirror_dir / "a.txt"
    altered.parent.mkdir(parents=True)
    altered.write_bytes(b"not alpha\n")
    path = reference_file(dataset, "a.txt")
    assert path.is_relative_to(tmp_path / "cache") and path.read_bytes() == FILES["a.txt"]
    assert requested == ["/a.txt"]
    assert reference_file(dataset, "a.txt") == path and requested == ["/a.txt"], "the cache is reused"


def test_a_download_with_the_wrong_hash_is_an_error_not_a_skip(isolated, served):
    server_root, base_url, _ = served
    dataset = small_dataset(base_url, FILES)
    (server_root / "a.txt").write_bytes(b"tampered\n")
    with pytest.raises(ValueError, match="SHA256 hash of downloaded file"):
        reference_file(dataset, "a.txt")


def test_without_mirror_and_network_the_test_is_skipped_with_a_reason_naming_the_file(isolated, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on: the "network" refuses
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dataset = small_dataset(f"http://127.0.0.1:{port}/", FILES)
    with pytest.raises(pytest.skip.Exception, match=r"reference data missing: test data: a\.txt") as skipped:
        reference_file(dataset, "a.txt")
    assert MIRROR_ENV in str(skipped.value) and f"127.0.0.1:{port}" in str(skipped.value)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_ENV):
        reference_file(dataset, "a.txt")


def test_mirror_only_files_name_the_mirror_to_set(isolated):
    with pytest.raises(ReferenceDataMissing, match=MIRROR_ENV):
        reference_data._locate(small_dataset(None, FILES), "a.txt")


def test_files_split_between_mirror_and_cache_are_gathered_in_one_folder(isolated, served):
    """wfdb reads a record's header and signal from one folder, the workflow a hosp folder: a dataset's files come
    back side by side wherever each was found."""
    server_root, base_url, _ = served
    files = {"r.hea": b"r 1 100 10\n", "r.dat": bytes(20)}
    dataset = small_dataset(base_url, files)
    (server_root / "r.dat").write_bytes(files["r.dat"])
    (isolated / dataset.mirror_dir).mkdir(parents=True)
    (isolated / dataset.mirror_dir / "r.hea").write_bytes(files["r.hea"])
    folder = reference_data.reference_dir(dataset)
    assert sorted(p.name for p in folder.iterdir()) == ["r.dat", "r.hea"]
    assert all((folder / rel).read_bytes() == content for rel, content in files.items())
