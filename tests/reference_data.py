"""Real reference data for the tests, fetched on first use and pinned by SHA-256.

Three open-access PhysioNet projects hold the files the tests compare the demo source and the pipeline with
(licences and citations: docs/REFERENCE_DATA.md):

- the MIMIC-IV Clinical Database Demo 2.2 (ODbL 1.0): the 22 ``hosp`` tables of its 100 patients and the
  project's own ``SHA256SUMS.txt``;
- the PTB Diagnostic ECG Database 1.0.0 (ODC-By 1.0): record ``patient001/s0010_re`` (15 leads, 1000 Hz);
- MIMIC-IV-ECG 1.0 (ODbL 1.0): one header, ``files/p1000/p10000032/s40689238/40689238.hea``.

Where a file is looked for, in order:

1. a **local mirror**: the folder in ``HFTRI_REFERENCE_MIRROR``, else ``../shared`` beside the repository (as CI
   lays it out), with the files under ``data/<dataset>/`` — used when its SHA-256 matches the pin;
2. the **cache** (``HFTRI_REFERENCE_CACHE``, else pooch's per-user cache folder, outside the repository), filled
   by pooch from PhysioNet, which checks every download against the pin.

The checkpoint key lists (``reference/checkpoint-keys/*.tsv``: key names and shapes of the released ST-MEM and
EchoPrime checkpoints) come from the mirror only: they are facts read off the weights, not a PhysioNet file.

With neither mirror nor network a test that needs one of these files is skipped with a reason that names the
file and how to get it; every other test runs. ``HFTRI_REQUIRE_REFERENCE_DATA=1`` (set by ``.ci/run``) turns
that skip into a failure.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pooch
import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
MIRROR_ENV = "HFTRI_REFERENCE_MIRROR"
CACHE_ENV = "HFTRI_REFERENCE_CACHE"
REQUIRE_ENV = "HFTRI_REQUIRE_REFERENCE_DATA"


class ReferenceDataMissing(RuntimeError):
    """A pinned file is in no mirror and could not be fetched."""


@dataclass(frozen=True)
class Dataset:
    """Pinned files of one public project: ``files`` maps a path under ``base_url`` to its SHA-256."""

    name: str
    mirror_dir: str  # where the files lie in a mirror laid out like ../shared
    base_url: str | None  # None: mirror only
    files: dict[str, str]


MIMIC_IV_DEMO = Dataset(
    name="MIMIC-IV Clinical Database Demo 2.2 (https://physionet.org/content/mimic-iv-demo/2.2/)",
    mirror_dir="data/mimic-iv-demo-2.2",
    base_url="https://physionet.org/files/mimic-iv-demo/2.2/",
    files={
        # From the project's SHA256SUMS.txt, whose own hash is pinned too.
        "SHA256SUMS.txt": "19dfd55fac45035ba8e9f4c7e59180ee5184e877504f098e517a434d2646366a",
        "LICENSE.txt": "bcdfcd4f31c790e30fb645dc36414907172405897adff329ad379eed85d12017",
        "hosp/admissions.csv.gz": "910b9f160ffdf1e08ea673585393f347c773ccc87d66875c627584a903ae8493",
        "hosp/d_hcpcs.csv.gz": "493ea7fe1d22afd5abd9138be8a4e50c776986feded6891143120d2bc724d881",
        "hosp/d_icd_diagnoses.csv.gz": "0f715a3c4c5e44400305d4deb86ff648e499a3bfcb946f353e8b030022d3ec06",
        "hosp/d_icd_procedures.csv.gz": "a921a20fbf3220e2a7fe874d6392d671c1cc769a001ef0a7841b80eb01030bb6",
        "hosp/d_labitems.csv.gz": "72ea5f020469fd24543bd98ab3bd0a4f645a5a4b7802d9d52af20d736f9d76db",
        "hosp/diagnoses_icd.csv.gz": "958565670c0b3903c0c12825366dc2bae8561d2d55f16feac0c949dd630ed3e4",
        "hosp/drgcodes.csv.gz": "9ec47b7a49514cfe243236ca2eb5c5b517d2215d6589efb2bd80166883243537",
        "hosp/emar.csv.gz": "f14a4b5597abcc2e8d62d291c7839347ef6260d4c548ea534ab62df6b2f49adc",
        "hosp/emar_detail.csv.gz": "8ca5a09f2fa2e0ad5d77121fd62bf5f58bad056713223d9758b4ecd03fa0a435",
        "hosp/hcpcsevents.csv.gz": "87f8af876aa6a608c6761068386e93e0c91b59ff2ce0d7a650fe8d5ba833247d",
        "hosp/labevents.csv.gz": "d51a4cf1ea63245abe7d544b0d50a928e9ee2ec5eb9a5ce85500aed0bd6c6dfc",
        "hosp/microbiologyevents.csv.gz": "fa462443cc5777ebf9d833f71c67f2a89b4a074eb376320da70bed220e918ad4",
        "hosp/omr.csv.gz": "6d7c69dbb2c79b9d1de7d1e68f3424ad248821d7c074dc6537d7290774af39b9",
        "hosp/patients.csv.gz": "59dcc6cd8450ddf03ad32cc7d76e41caa4c9633541715987f590c74835cf6fae",
        "hosp/pharmacy.csv.gz": "3403865a279464b14d038a66b30ba3d609933f517262ea0402fef020046bd197",
        "hosp/poe.csv.gz": "bf850e1519f2c3df8c706dc5e2afcb83e86e1d6e4afd7c01426b6b07d25cfeef",
        "hosp/poe_detail.csv.gz": "7010cbc4d74e9a7c998be33c3736af301ebe2c6678969e25800d28e90a2b5825",
        "hosp/prescriptions.csv.gz": "33c392ba5b9299b08eca0a61911ba106f0aebdba26ed31b856bb9ffd49fe3654",
        "hosp/procedures_icd.csv.gz": "68f21dcba9ae0c4b7faa3ef38aa950a8ebeb6d167bc74416314dccdcf28674e0",
        "hosp/provider.csv.gz": "7a56a24cfe2fcd5ed1995c696417bf8f5c09088eb546503b07362c504228c63a",
        "hosp/services.csv.gz": "28306d68e952fe2cc9ef6e60b0afda93c27d7a06bee8ef39e71ccc4de5ded793",
        "hosp/transfers.csv.gz": "41151539886d12d57159b65ffe4d7df5a7ef8ceb7cd113ea9a56fbfbfd78a87c",
    },
)
PTB_DIAGNOSTIC = Dataset(
    name="PTB Diagnostic ECG Database 1.0.0 (https://physionet.org/content/ptbdb/1.0.0/)",
    mirror_dir="data/wfdb-ptb",
    base_url="https://physionet.org/files/ptbdb/1.0.0/patient001/",
    files={
        "s0010_re.hea": "30d2d5db5b7b735f7dc39e5cf3e60a433a868b53d24587c9820cf51aa1729b87",
        "s0010_re.dat": "4e26a62c96e50eebd0eca7a11a4ad62ac8d7654e4de47acf2e0ce64be9565f20",
        "s0010_re.xyz": "0caffd208e17c5c597fb39c8416f85ce55726f3e8e9d5486a6331c9ec4451265",
    },
)
MIMIC_IV_ECG = Dataset(
    name="MIMIC-IV-ECG 1.0 (https://physionet.org/content/mimic-iv-ecg/1.0/)",
    mirror_dir="data/mimic-iv-ecg-format",
    base_url="https://physionet.org/files/mimic-iv-ecg/1.0/files/p1000/p10000032/s40689238/",
    files={"40689238.hea": "2625225df3b1dfe8983ad036fafc3a9dc502cb031c6e1e5f7a1360caf5d7e69c"},
)
CHECKPOINT_KEYS = Dataset(
    name="checkpoint key lists of ST-MEM and EchoPrime (reference/checkpoint-keys in the mirror)",
    mirror_dir="reference/checkpoint-keys",
    base_url=None,
    files={
        "st-mem-vit-base.tsv": "3363448c621a49ceb62903a354abc6c386a4fcae8cb7dc603f0d0ae3e70f4098",
        "echoprime-encoder.tsv": "00fa35f2545d74c21911eb259045e21a48211762778649046c0d98213df69132",
        "echoprime-view-classifier.tsv": "9e4e486c44430bdddd7b8bf0c45f1ab1edd39f0da7298f18ef17acdcb7e28705",
    },
)


def sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Hashed once per process for a given size and modification time: many tests read the same files."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# Worked out once: some tests point HOME elsewhere, which must not move the cache.
DEFAULT_CACHE = Path(pooch.os_cache("hftri-mimic")).resolve()
DOWNLOAD_TIMEOUT_S = 30
# A file that could not be fetched is not tried again in the same session (offline, ~40 call sites).
_unavailable: dict[tuple[str, str], ReferenceDataMissing] = {}


def mirror_roots() -> list[Path]:
    """Mirrors laid out like ../shared, the environment variable's first."""
    roots = [Path(os.environ[MIRROR_ENV]).expanduser().resolve()] if os.environ.get(MIRROR_ENV) else []
    return [*roots, REPO.parent / "shared"]


def cache_root() -> Path:
    return Path(os.environ[CACHE_ENV]).expanduser().resolve() if os.environ.get(CACHE_ENV) else DEFAULT_CACHE


def _in_mirror(dataset: Dataset, rel: str) -> Path | None:
    for root in mirror_roots():
        path = root / dataset.mirror_dir / rel
        if path.is_file() and sha256(path) == dataset.files[rel]:
            return path
    return None


def _fetch(dataset: Dataset, rel: str) -> Path:
    """Downloads into the cache (pooch checks the SHA-256 and keeps a verified file for the next run)."""
    how_to_get = f"set {MIRROR_ENV} to a folder with {dataset.mirror_dir}/{rel}" + (
        "" if dataset.base_url is None else f", or allow a download from {dataset.base_url}"
    )
    if dataset.base_url is None:
        raise ReferenceDataMissing(f"{dataset.name}: {rel} is in no mirror ({how_to_get})")
    key = (dataset.base_url, rel)
    if key in _unavailable:
        raise _unavailable[key]
    fetcher = pooch.create(
        path=cache_root() / dataset.mirror_dir,
        base_url=dataset.base_url,
        registry={name: f"sha256:{digest}" for name, digest in dataset.files.items()},
        retry_if_failed=1,
    )
    try:
        return Path(fetcher.fetch(rel, downloader=pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S)))
    except (requests.exceptions.RequestException, OSError) as error:
        missing = ReferenceDataMissing(
            f"{dataset.name}: {rel} is in no mirror and the download failed ({type(error).__name__}); {how_to_get}"
        )
        _unavailable[key] = missing
        raise missing from error


def _locate(dataset: Dataset, rel: str) -> Path:
    if rel not in dataset.files:
        raise KeyError(f"{rel} is not a pinned file of {dataset.name}")
    return _in_mirror(dataset, rel) or _fetch(dataset, rel)


def reference_file(dataset: Dataset, rel: str) -> Path:
    """The verified local path of one pinned file; skips the calling test (fails it under CI) when unavailable."""
    try:
        return _locate(dataset, rel)
    except ReferenceDataMissing as missing:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{missing} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(f"reference data missing: {missing}")


def reference_dir(dataset: Dataset, prefix: str = "") -> Path:
    """A folder holding every pinned file of ``dataset`` under ``prefix`` (e.g. the demo's ``hosp/``), verified."""
    rels = sorted(rel for rel in dataset.files if rel.startswith(prefix))
    paths = [reference_file(dataset, rel) for rel in rels]
    # the folder each file's path says it lies in, e.g. .../mimic-iv-demo-2.2/hosp for hosp/admissions.csv.gz
    roots = {path.parents[len(Path(rel).relative_to(prefix).parts) - 1] for rel, path in zip(rels, paths, strict=True)}
    if len(roots) == 1:
        return roots.pop()
    # Some files from a mirror, others from the cache: gather them in the cache, one folder as the workflow reads.
    gathered = cache_root() / "gathered" / dataset.mirror_dir / prefix
    gathered.mkdir(parents=True, exist_ok=True)
    for rel, path in zip(rels, paths, strict=True):
        target = gathered / Path(rel).relative_to(prefix)
        if not target.exists() or sha256(target) != dataset.files[rel]:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(path.read_bytes())
            partial.replace(target)  # atomic: a concurrent or interrupted copy never leaves half a file
    return gathered


def mimic_demo_hosp() -> Path:
    """The MIMIC-IV demo's hosp folder (22 real tables)."""
    return reference_dir(MIMIC_IV_DEMO, "hosp/")


def mimic_demo_file(rel: str) -> Path:
    return reference_file(MIMIC_IV_DEMO, rel)


def ptb_record() -> Path:
    """The PTB record's path without suffix, as wfdb reads it (header, signals and Frank leads verified)."""
    return reference_dir(PTB_DIAGNOSTIC) / "s0010_re"


def mimic_ecg_header() -> Path:
    return reference_file(MIMIC_IV_ECG, "40689238.hea")


def checkpoint_keys(name: str) -> Path:
    return reference_file(CHECKPOINT_KEYS, name)
