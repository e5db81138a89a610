"""`steph-client`: the hospital integration command (batch scoring, registration, merge jobs).

    steph-client score --model MODEL_ID --input DIR_OR_MANIFEST --output FILE.csv|FILE.jsonl \\
        [--workers N] [--format csv|jsonl|fhir] [--errors FILE] [--url URL] [--key KEY] [--config FILE]

Exit codes: 0 everything done (or already done), 1 some patients / the job failed, 2 usage, configuration or
authentication error, 3 the service could not be reached (or kept failing) after every retry, 130 interrupted.
The API key is read from --key, $STEPH_API_KEY or the config file, and is never printed or logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from app import __version__
from app.client import commands as c
from app.client.config import ConfigError, resolve_config
from app.client.inputs import InputError
from app.client.outputs import FORMATS, OutputError
from app.client.registry_commands import add_registry_commands
from app.client.sdk import Client
from app.client.transport import AuthError, ClientError, ConnectionFailed

MODEL_HELP = "model id, name@alias (e.g. brca@champion), name/VERSION or name/latest"


def _common(parser: argparse.ArgumentParser | None = None, *, suppress: bool = True) -> argparse.ArgumentParser:
    """The connection flags, accepted before and after the command. The sub-commands' copies default to SUPPRESS
    so a flag given before the command is not overwritten by the sub-command's default."""
    common = parser or argparse.ArgumentParser(add_help=False)
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    g = common.add_argument_group("connection (flags > STEPH_URL / STEPH_API_KEY > config file)")
    g.add_argument("--url", help="service base URL, e.g. https://steph.example.org", **d)
    g.add_argument("--key", help="API key (prefer STEPH_API_KEY or the config file: flags show up in `ps`)", **d)
    g.add_argument("--config", help="TOML config file (default ~/.config/steph/client.toml)", **d)
    g.add_argument("--timeout", type=float, help="seconds per request (default 120)", **d)
    g.add_argument("--retries", type=int, help="extra attempts on connection errors, 429, 5xx (default 5)", **d)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar", **d)
    g.add_argument("-v", "--verbose", action="store_true", help="log retries and requests on stderr", **d)
    return common


def _add(sub, name: str, func: Callable, help_text: str, common) -> argparse.ArgumentParser:
    p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
    p.set_defaults(func=func)
    return p


def _add_score(sub, common) -> None:
    p = _add(sub, "score", c.cmd_score, "score a folder of bags or a manifest into CSV/JSONL/FHIR", common)
    p.add_argument("--model", required=True, help=MODEL_HELP + " (resolved once, at the start)")
    p.add_argument("--input", required=True, help="bag folder (recursive) or manifest CSV patient_id,path")
    p.add_argument("--output", required=True, help="output file; rows already there are skipped (resume)")
    p.add_argument("--format", choices=FORMATS, help="csv, jsonl, or fhir (NDJSON of FHIR R4 Observations)")
    p.add_argument("--workers", type=int, default=None, help="parallel requests (default 4 or the config's)")
    p.add_argument(
        "--errors",
        help="errors CSV, rewritten at the end of each run with that run's failures (default: "
        "<stem>.errors.csv for a .csv output, else <output name>.errors.csv)",
    )
    p.add_argument(
        "--server-paths",
        action="store_true",
        help="do not upload: the server reads the bags in place (POST /predict/paths; it needs "
        "STEPH_PREDICT_PATHS and the same files under its STEPH_DATA_ROOT)",
    )
    p.add_argument(
        "--server-root",
        help="with --server-paths: the local directory that IS the server's STEPH_DATA_ROOT (paths are sent "
        "relative to it); default: send absolute paths (the same mount on both machines)",
    )
    p = _add(sub, "predict", c.cmd_predict, "score a few bag files, print JSON", common)
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("files", nargs="+", help="bag files (.h5/.pt/.npy/.safetensors), one patient per file")
    p.add_argument("--patient-id", help="treat all files as one patient's slides")


def _add_registration(sub, common) -> None:
    p = _add(sub, "register-base", c.cmd_register_base, "upload a base (θ₀) checkpoint", common)
    p.add_argument("file", help="θ₀ as .safetensors or reference .pth")
    p.add_argument("--name", required=True, help="display name of the family")
    p.add_argument("--encoder", required=True, help="feature encoder, e.g. uni2-h")
    p = _add(sub, "register", c.cmd_register, "upload per-cancer checkpoints (.safetensors / .pth)", common)
    p.add_argument("files", nargs="+", help="checkpoint files, one per cancer")
    p.add_argument("--base", required=True, help="base id")
    p.add_argument("--mapping", help="CSV file,cancer (default: cancer = file stem)")
    p = _add(sub, "register-cohort", c.cmd_register_cohort, "upload a cohort directory or archive", common)
    p.add_argument("path", nargs="?", help="cohort directory (zipped on the fly) or .zip/.tar archive")
    p.add_argument("--server-path", help="instead: a directory under the server's data root (admin)")
    p.add_argument("--name", required=True, help="display name of the cohort")
    p.add_argument("--base", required=True, help="base id (the bags' D must match it)")


def _add_jobs(sub, common) -> None:
    p = _add(sub, "merge", c.cmd_merge, "submit a merge job (safe to retry: idempotency key)", common)
    p.add_argument("--method", required=True, help="steph, average, task_arithmetic, ties, …")
    p.add_argument("--base", required=True, help="base id")
    p.add_argument("--target", required=True, help="target checkpoint id")
    p.add_argument("--sources", nargs="+", help="source checkpoint ids (default: all others of the base)")
    p.add_argument("--cohort", required=True, help="cohort id of the target cancer")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="method/training option")
    p.add_argument("--idempotency-key", help="reuse to make a resubmission return the same job")
    p.add_argument("--wait", action="store_true", help="then watch it like `watch`")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls with --wait")
    p = _add(sub, "watch", c.cmd_watch, "follow a merge job until it ends; print the comparison", common)
    p.add_argument("job_id", help="the job id `merge` printed")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    p = _add(sub, "cancel", c.cmd_cancel, "cancel a queued or running merge job", common)
    p.add_argument("job_id", help="the job to cancel")
    _add(sub, "methods", c.cmd_methods, "list merge methods and their parameters", common)


def build_parser() -> argparse.ArgumentParser:
    """The `steph-client` argument parser (every sub-command also takes the connection flags)."""
    parser = argparse.ArgumentParser(prog="steph-client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"steph-client {__version__}")
    _common(parser, suppress=False)  # also before the command: `steph-client --url U health`
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    _add_score(sub, common)
    _add(sub, "health", c.cmd_health, "check the service is ready", common)
    _add_registration(sub, common)
    _add_jobs(sub, common)
    add_registry_commands(sub, common, _add)
    p = _add(sub, "models", c.cmd_models, "list models, or show one", common)
    p.add_argument("model_id", nargs="?", help=MODEL_HELP + " (default: list all models)")
    p = _add(sub, "download", c.cmd_download, "download a model artifact", common)
    p.add_argument("model_id", help=MODEL_HELP)
    p.add_argument("dest", help="file or directory")
    p = sub.add_parser(
        "validate",
        help="offline: C-index of a scores file against local outcomes (labels never leave the site)",
        description=validate_doc(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scores", required=True, help="what `score` wrote: .csv, .jsonl or FHIR .ndjson")
    p.add_argument("--labels", required=True, help="CSV with patient_id, t (days), e (1 event, 0 censored)")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the 95%% interval (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--report", metavar="HTML", help="also write KM / calibration / C-index figures (needs matplotlib)")
    p.add_argument("--groups", type=int, default=2, choices=(2, 3, 4), help="risk groups in the report's KM plot")
    p.set_defaults(func=c.cmd_validate, offline=True)
    return parser


def validate_doc() -> str:
    from app.client import validate

    return validate.__doc__ or ""


def _client_for(args: argparse.Namespace, env) -> Client:
    cfg = resolve_config(url=args.url, api_key=args.key, config_path=args.config, env=env)
    if getattr(args, "workers", "absent") is None:
        args.workers = cfg.workers
    return Client(
        cfg.url,
        cfg.api_key,
        timeout=args.timeout or cfg.timeout,
        retries=cfg.retries if args.retries is None else args.retries,
        backoff=cfg.backoff,
    )


def _fail(message: str, code: int) -> int:
    print(f"steph-client: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, env=None) -> int:
    """Entry point of the `steph-client` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    if getattr(args, "offline", False):  # needs no service, URL or key
        try:
            return args.func(args)
        except (OSError, ValueError) as exc:
            return _fail(str(exc), c.EXIT_USAGE)
    try:
        client = _client_for(args, os.environ if env is None else env)
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc), c.EXIT_USAGE)
    try:
        with client:
            return args.func(args, client)
    except AuthError as exc:
        return _fail(f"{exc} (check the API key and its scope)", c.EXIT_USAGE)
    except ConnectionFailed as exc:
        return _fail(str(exc), c.EXIT_UNREACHABLE)
    except ClientError as exc:  # a refused request (4xx: unknown model, bad parameters, conflict) is a usage error
        down = exc.status >= 500 or exc.status == 429
        return _fail(str(exc), c.EXIT_UNREACHABLE if down else c.EXIT_USAGE if exc.status >= 400 else c.EXIT_FAILED)
    except (InputError, OutputError, ConfigError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc), c.EXIT_USAGE)
    except BrokenPipeError:  # stdout closed early (e.g. `steph-client models | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return c.EXIT_OK
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume", 130)
    except Exception as exc:  # a bug or an unexpected answer: one line, the traceback only with -v
        if args.verbose:
            logging.getLogger("steph.client").error("unexpected error", exc_info=True)
        return _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with -v for details)", c.EXIT_UNREACHABLE)


if __name__ == "__main__":
    sys.exit(main())
