"""Cohort-first download (issue #23) against a local stand-in for PhysioNet: three projects in their real layouts
(MIMIC-IV `hosp/`, MIMIC-IV-ECG open access, MIMIC-IV-ECHO credentialed) written by the demo generator, each with its
SHA256SUMS.txt, served with basic auth on 127.0.0.1. `download` fetches the tables, record lists and checksum lists;
`download_cohort` fetches exactly the files the cohort's ECG and echo plans read (checked from the server's request
log); the workflow then runs on the downloaded tree alone. An incomplete download stops the run, or, opted into,
excludes its records as `not_downloaded`, shown in the attrition."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
from conftest import SMALL_DEMO, base_config, snakemake, write_config
from physionet_server import PASSWORD, USER, TreeServer

from hftri_mimic.demo.generate import DemoSpec, generate_demo_source
from hftri_mimic.echo.view_classifier import ViewClassifierConfig, build_view_classifier, save_view_classifier
from hftri_mimic.ingest.source_files import planned_files
from hftri_mimic.tools.preflight import check_record_files

pytestmark = pytest.mark.slow

CONFIG = base_config()
# project -> (its folder under /files/, the demo source folder it serves, open access)
PROJECTS = {
    "mimiciv": ("mimiciv/3.1", "hosp", False),
    "mimic-iv-ecg": ("mimic-iv-ecg/1.0", "ecg", True),
    "mimic-iv-echo": ("mimic-iv-echo/0.1", "echo", False),
}


def serve_tree(source: Path, served: Path) -> None:
    """The demo source in PhysioNet's layout, one SHA256SUMS.txt per project."""
    for folder, tree, _ in PROJECTS.values():
        root = served / folder
        shutil.copytree(source / tree, root / "hosp" if tree == "hosp" else root)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.relative_to(root).as_posix()}\n" for p in files]
        (root / "SHA256SUMS.txt").write_text("".join(lines))


@pytest.fixture(scope="module")
def physionet(tmp_path_factory):
    base = tmp_path_factory.mktemp("cohort_download")
    spec = {**CONFIG["demo"], **SMALL_DEMO}
    spec["echo_frames"] = tuple(spec["echo_frames"])
    generate_demo_source(base / "source", base / "truth", DemoSpec(**spec), workers=2)
    serve_tree(base / "source", base / "served")
    server = TreeServer(base / "served", prefix="/files/", open_paths=("mimic-iv-ecg/",))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, server
    server.shutdown()
    server.server_close()


@pytest.fixture
def credentials(monkeypatch, tmp_path):
    """Credentials in the environment, and a .netrc `default` entry that requests would add to any request by itself
    (the open-access project must get neither)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"default login {USER} password {PASSWORD}\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("http_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def configure(workdir: Path, server: TreeServer, missing_files: str = "error") -> Path:
    """A real-mode run whose three source roots are where `download` puts the projects."""
    mirror = workdir / "resources/physionet/127.0.0.1/files"
    weights = workdir / "view_classifier.pt"
    if not weights.exists():  # EchoPrime's classifier in a real run: a random one of the demo's size stands in
        save_view_classifier(
            build_view_classifier(ViewClassifierConfig(variant="convnext_mini", input_size=64)), weights
        )
    projects = {
        name: {"url": f"{server.url}{folder}/", "access": "open" if is_open else "credentialed",
               "include": None, "file_list": None, "cohort_files": None}
        for name, (folder, _, is_open) in PROJECTS.items()
    }  # fmt: skip
    projects["mimiciv"]["include"] = ["hosp/*.csv.gz"]
    projects["mimic-iv-ecg"] |= {"include": ["record_list.csv", "machine_measurements.csv"], "cohort_files": "ecg"}
    projects["mimic-iv-echo"] |= {"include": ["echo-record-list.csv", "echo-study-list.csv"], "cohort_files": "echo"}
    return write_config(
        workdir,
        source={"kind": "mimic", "hosp_root": str(mirror / "mimiciv/3.1/hosp"),
                "ecg_root": str(mirror / "mimic-iv-ecg/1.0"), "echo_root": str(mirror / "mimic-iv-echo/0.1"),
                "missing_files": missing_files},
        echo={**CONFIG["echo"], "view_classifier": {**CONFIG["echo"]["view_classifier"], "weights": str(weights)}},
        download={**CONFIG["download"], "retries": 1, "backoff_s": 0, "timeout_s": 20, "projects": projects},
    )  # fmt: skip


def gets(server: TreeServer) -> list[str]:
    with server.lock:
        return [path for path, _ in server.seen]


def signal_gets(server: TreeServer) -> set[str]:
    """The ECG and echo files requested (paths under each project's files/)."""
    return {path for path in gets(server) if "/files/" in path}


def cohort_files(workdir: Path) -> set[str]:
    results = workdir / "results"
    return {f"mimic-iv-ecg/1.0/{rel}" for rel in planned_files(results / "ecg/plan.parquet", "ecg")} | {
        f"mimic-iv-echo/0.1/{rel}" for rel in planned_files(results / "echo/plan.parquet", "echo")
    }


def test_cohort_first_download_fetches_only_the_cohort_files_and_the_run_needs_nothing_else(
    physionet, tmp_path, credentials
):
    base, server = physionet
    workdir = tmp_path / "run"
    workdir.mkdir()
    configure(workdir, server)
    server.seen.clear()
    server.authorized.clear()

    # Phase 1: tables, record lists and checksum lists; no signal file.
    snakemake(workdir, "--cores", "2", "download", timeout=300)
    assert not signal_gets(server), "phase 1 fetched ECG or echo files"
    assert {p for p in gets(server) if p.endswith("SHA256SUMS.txt")} == {
        f"{folder}/SHA256SUMS.txt" for folder, _, _ in PROJECTS.values()
    }
    ecg_requests = [sent for path, sent in server.authorized if path.startswith("mimic-iv-ecg/")]
    assert ecg_requests and not any(ecg_requests), "credentials were sent to the open-access project"

    # Phase 2, interrupted: one ECG data file and one DICOM of the cohort fail every time.
    snakemake(workdir, "--cores", "2", "-n", "download_cohort", timeout=300)  # plans parse with phase 1 only
    snakemake(workdir, "--cores", "2", "ecg_plan", "echo_shard_plan", timeout=900)  # the ingest, cohort and plans
    wanted = cohort_files(workdir)
    all_signal_files = {
        p.relative_to(base / "served").as_posix() for p in (base / "served").rglob("*") if "/files/" in p.as_posix()
    }
    assert wanted < all_signal_files, "the demo's cohort should need only part of the archives"
    # A download stops at its first failure. The ECG one fails at its last file (SHA256SUMS.txt order) and the echo
    # one halfway (a DICOM of the middle patient, p<subject> being the 5th part), so that some of each remain and the
    # echo exclusions reach the attrition rather than hide behind the ECG ones of the last patients.
    broken_ecg = max(p for p in wanted if p.endswith(".dat"))
    dicoms = sorted(p for p in wanted if p.endswith(".dcm"))
    middle = sorted({p.split("/")[4] for p in dicoms})[len({p.split("/")[4] for p in dicoms}) // 2]
    broken_dicom = max(p for p in dicoms if p.split("/")[4] == middle)
    server.always_drop |= {broken_ecg, broken_dicom}
    failed = snakemake(workdir, "--cores", "2", "--keep-going", "download_cohort", check=False, timeout=600)
    assert failed.returncode != 0

    # Preflight samples the cohort's lists and sees the gap; then the run stops on it, listing the absent files.
    mirror = workdir / "resources/physionet/127.0.0.1/files"
    roots = {"hosp": None, "ecg": mirror / "mimic-iv-ecg/1.0", "echo": mirror / "mimic-iv-echo/0.1"}
    rows = list(check_record_files(roots, workdir / "results"))
    assert [row.item for row in rows] == ["ecg cohort files", "echo cohort files"]
    assert any(row.status == "problem" and "download_cohort" in row.detail for row in rows), rows
    stopped = snakemake(workdir, "--cores", "2", "dataset", check=False, timeout=900)
    message = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and "source.missing_files: exclude" in message, message[-3000:]
    assert "files the ecg stage reads are not under source.ecg_root" in message or "files the echo stage" in message
    listed = set()
    for tree in ("ecg", "echo"):
        missing = workdir / f"results/{tree}/missing_files.txt"
        if missing.exists():
            listed |= set(missing.read_text().split())
    assert listed and not any(rel in message for rel in listed), "absent paths are listed in a file, not printed"

    # Opted in: the records are excluded as not_downloaded and the attrition says so.
    configure(workdir, server, missing_files="exclude")
    # up to the attrition: with half the echo studies excluded, the 60-patient demo is too small to split
    snakemake(workdir, "--cores", "2", "results/hftri/attrition.parquet", timeout=1200)
    ecg_excl = pl.read_parquet(workdir / "results/ecg/exclusions.parquet")
    echo_excl = pl.read_parquet(workdir / "results/echo/exclusions.parquet")
    assert "not_downloaded" in ecg_excl["reason"].to_list() and "not_downloaded" in echo_excl["reason"].to_list()
    assert "missing_header" not in ecg_excl["reason"].to_list() and "missing_data" not in ecg_excl["reason"].to_list()
    attrition = pl.read_parquet(workdir / "results/hftri/attrition.parquet")["reason"].to_list()
    assert any("ECG: file not downloaded" in r for r in attrition), attrition
    assert any("Echo study: a DICOM of the study is not downloaded" in r for r in attrition), attrition
    excluded_patients = len(pl.read_parquet(workdir / "results/hftri/manifest.parquet"))

    # The server recovers: phase 2 completes, and the run takes the files in (the check and the shards rerun).
    server.always_drop.clear()
    server.events.clear()
    done = snakemake(workdir, "--cores", "2", "download_cohort", timeout=600)
    assert "mimic-iv-echo cohort: " in done.stdout and " to fetch (" in done.stdout, "the plan shows in the terminal"
    assert signal_gets(server) == wanted, "phase 2 requested files outside the cohort's plans (or missed some)"
    for project in ("mimic-iv-ecg/", "mimic-iv-echo/"):  # every file sized (HEAD) before its first transfer
        events = [(method, path) for method, path in server.events if path.startswith(project) and "/files/" in path]
        first_get = next(i for i, (method, _) in enumerate(events) if method == "GET")
        assert events[:first_get] and all(method == "HEAD" for method, _ in events[:first_get]), project
        assert {path for method, path in events[:first_get]} == {path for method, path in events if method == "GET"}
    record = json.loads((workdir / "resources/physionet/mimic-iv-echo.cohort.download.json").read_text())
    assert record["n_files"] == len([p for p in wanted if p.startswith("mimic-iv-echo/")])

    assert {row.status for row in check_record_files(roots, workdir / "results")} == {"ok"}

    shutil.rmtree(base / "source")  # the run reads the downloaded tree alone
    snakemake(workdir, "--cores", "2", "dataset", timeout=1200)
    reasons = pl.read_parquet(workdir / "results/ecg/exclusions.parquet")["reason"].to_list()
    reasons += pl.read_parquet(workdir / "results/echo/exclusions.parquet")["reason"].to_list()
    assert "not_downloaded" not in reasons and "missing_file" not in reasons
    assert len(pl.read_parquet(workdir / "results/hftri/manifest.parquet")) > excluded_patients

    ecg_requests = [sent for path, sent in server.authorized if path.startswith("mimic-iv-ecg/")]
    assert not any(ecg_requests), "credentials (environment or .netrc) reached the open-access project"
    for log in (workdir / "results/logs/download").glob("*.log"):
        assert not any(rel.split("/")[4] in log.read_text() for rel in wanted), f"a patient id in {log.name}"

    # A second cohort download re-hashes nothing and fetches nothing.
    before = len(gets(server))
    snakemake(workdir, "--cores", "2", "download_cohort", "--forcerun", "download_cohort_project", timeout=600)
    assert len(gets(server)) == before, "an unchanged mirror is not fetched again (nor its checksum lists)"
    for project in ("mimic-iv-ecg", "mimic-iv-echo"):
        record = json.loads((workdir / f"resources/physionet/{project}.cohort.download.json").read_text())
        assert (record["files_hashed"], record["downloaded"]) == (0, 0), project
