"""`trackprep fetch`, `check` and `datasets`: thin wrappers over trackprep.io.fetch, trackprep.io.check
and trackprep.io.datahome. Without --root, datasets go to and are found in the data home.

Exit codes: 0 the copy is complete; 1 problems found (the report says which), or the dataset
is not in the data home; 2 the dataset needs a manual download (the instructions are printed);
3 a download or extraction failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from trackprep.cli_errors import EXIT_USAGE, fail

EXIT_PROBLEMS, EXIT_MANUAL, EXIT_FAILED = 1, 2, 3
NAMES_HELP = "davis2016, davis2017 (alias davis), segtrackv2, fbms59, jumpcut"
ROOT_HELP = "default: <data home>/<dataset>, the data home being $TRACKPREP_DATA or the per-user default (`trackprep datasets` shows it)"


def _manifest(dataset: str):
    from trackprep.io.datahome import manifest_dataset
    from trackprep.io.datasets import DatasetError
    from trackprep.io.manifests import ManifestError, load_manifest

    try:
        return load_manifest(manifest_dataset(dataset))
    except (DatasetError, ManifestError) as exc:
        fail(exc, EXIT_USAGE)


def fetch_cli(
    dataset: str = typer.Argument(..., help=f"Dataset name: {NAMES_HELP}."),
    root: Optional[Path] = typer.Option(None, "--root", help=f"Folder to download and extract into (one folder per dataset); {ROOT_HELP}."),
    keep_archives: bool = typer.Option(False, "--keep-archives", help="Keep the downloaded archives after extraction."),
    retries: int = typer.Option(3, help="Resume attempts within this run when a connection drops."),
) -> None:
    """Download a dataset's official archives (resuming), verify them, extract and check the tree."""
    from trackprep.io.datahome import dataset_folder, home_origin
    from trackprep.io.datasets import DatasetError
    from trackprep.io.fetch import FetchError, fetch_dataset

    manifest = _manifest(dataset)
    if root is None:
        root = dataset_folder(manifest.name)
        typer.echo(f"{manifest.name}: into {root} (the data home, from {home_origin()})", err=True)
    try:
        result = fetch_dataset(manifest, root, keep_archives=keep_archives, retries=retries, echo=typer.echo)
    except (FetchError, DatasetError, OSError) as exc:
        fail(f"fetch failed: {exc}", EXIT_FAILED)
    if result.status == "manual":
        typer.echo(result.instructions)
        raise typer.Exit(EXIT_MANUAL)
    assert result.report is not None
    typer.echo(result.report.summary())
    if not result.report.ok:
        raise typer.Exit(EXIT_PROBLEMS)


def check_cli(
    dataset: str = typer.Argument(..., help=f"Dataset name: {NAMES_HELP}."),
    root: Optional[Path] = typer.Option(None, "--root", help=f"The local copy to verify; {ROOT_HELP}."),
    split: str = typer.Option(None, help="Check one split (e.g. train, val, test); default: report every split."),
    decode: bool = typer.Option(False, "--decode", help="Decode every frame and mask instead of the quick integrity check."),
) -> None:
    """Verify a local copy against its manifest: missing sequences, frame counts, unreadable files."""
    from trackprep.io.check import check_dataset
    from trackprep.io.datahome import DataHomeError, locate_dataset

    manifest = _manifest(dataset)
    try:
        folder = locate_dataset(dataset, root)
    except DataHomeError as exc:
        fail(exc, EXIT_PROBLEMS)
    report = check_dataset(manifest, folder, split=split, decode=decode)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEMS)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B" if n else "-"


def datasets_cli(
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Every known dataset: in the data home or not, complete or not, size on disk, licence, how to get it."""
    from trackprep.io.datahome import NOT_FETCHABLE, catalog, data_home, home_origin

    home = data_home()
    entries = catalog(home=home)
    if as_json:
        typer.echo(json.dumps({"data_home": str(home), "datasets": [
            {"name": e.manifest.name, "folder": str(e.folder), "status": e.status, "bytes": e.bytes,
             "complete_splits": e.report.complete_splits if e.report else [], "licence": e.licence,
             "licence_url": e.manifest.licence_url, "how_to_get": e.how_to_get} for e in entries]}, indent=2))
        return
    rows = [("dataset", "status", "size", "how to get", "licence")]
    for e in entries:
        status = e.status
        if e.report is not None and e.report.complete_splits:
            status += f" ({', '.join(e.report.complete_splits)})" if e.status == "complete" else ""
        rows.append((e.manifest.name, status, _size(e.bytes), e.how_to_get, e.licence))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    typer.echo(f"data home: {home} ({home_origin()})")
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    typer.echo("complete: every sequence of a split present with its frames and masks, from the listing; "
               "`trackprep check NAME` also verifies the files")
    typer.echo("davis is an alias of davis2017; also readable, from --root only: "
               + "; ".join(f"{k} {v}" for k, v in NOT_FETCHABLE.items()))


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch_cli)
    app.command("check")(check_cli)
    app.command("datasets")(datasets_cli)
