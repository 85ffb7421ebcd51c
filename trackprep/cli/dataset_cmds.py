"""`trackprep fetch` and `trackprep check`: thin wrappers over trackprep.io.fetch / trackprep.io.check.

Exit codes: 0 the copy is complete; 1 problems found (the report says which); 2 the dataset
needs a manual download (the instructions are printed); 3 a download or extraction failed.
"""

from __future__ import annotations

from pathlib import Path

import typer

from trackprep.io.check import check_dataset
from trackprep.io.datasets import DatasetError, canonical_name
from trackprep.io.fetch import FetchError, fetch_dataset
from trackprep.io.manifests import ManifestError, load_manifest

EXIT_PROBLEMS, EXIT_MANUAL, EXIT_FAILED = 1, 2, 3


def _manifest(dataset: str):
    try:
        return load_manifest(canonical_name(dataset))
    except (DatasetError, ManifestError) as exc:
        raise typer.BadParameter(str(exc), param_hint="DATASET") from None


def fetch_cli(
    dataset: str = typer.Argument(..., help="Dataset name: davis2016, davis2017 (alias davis), segtrackv2, fbms59, jumpcut."),
    root: Path = typer.Option(..., "--root", help="Folder to download and extract into (one folder per dataset)."),
    keep_archives: bool = typer.Option(False, "--keep-archives", help="Keep the downloaded archives after extraction."),
    retries: int = typer.Option(3, help="Resume attempts within this run when a connection drops."),
) -> None:
    """Download a dataset's official archives (resuming), verify them, extract and check the tree."""
    manifest = _manifest(dataset)
    try:
        result = fetch_dataset(manifest, root, keep_archives=keep_archives, retries=retries, echo=typer.echo)
    except (FetchError, DatasetError) as exc:
        typer.echo(f"fetch failed: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if result.status == "manual":
        typer.echo(result.instructions)
        raise typer.Exit(EXIT_MANUAL)
    assert result.report is not None
    typer.echo(result.report.summary())
    if not result.report.ok:
        raise typer.Exit(EXIT_PROBLEMS)


def check_cli(
    dataset: str = typer.Argument(..., help="Dataset name: davis2016, davis2017 (alias davis), segtrackv2, fbms59, jumpcut."),
    root: Path = typer.Option(..., "--root", help="The local copy to verify."),
    split: str = typer.Option(None, help="Check one split (e.g. train, val, test); default: report every split."),
    decode: bool = typer.Option(False, "--decode", help="Decode every frame and mask instead of the quick integrity check."),
) -> None:
    """Verify a local copy against its manifest: missing sequences, frame counts, unreadable files."""
    manifest = _manifest(dataset)
    report = check_dataset(manifest, root, split=split, decode=decode)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEMS)


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch_cli)
    app.command("check")(check_cli)
