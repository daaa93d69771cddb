"""The autoraysearch command line: the same flows as the Prefect deployments, for a person at a terminal."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from datetime import datetime
from importlib import resources
from pathlib import Path

from autoraysearch.errors import AutoraysearchError, describe_failure
from autoraysearch.trials.sandbox import keep_llm_keys_private

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoraysearch",
        description="Improve a PyTorch model.py overnight: propose, commit, train on Ray, keep or roll back, repeat.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    setup = commands.add_parser("setup", help="generate train.py for a model.py and record the baseline")
    _add_setup_options(setup)
    _add_cluster_options(setup)

    run = commands.add_parser("run", help="run the loop until a stop condition holds (none given: forever)")
    run.add_argument("experiment_dir", nargs="?", default=".", help="experiment folder (default: here)")
    run.add_argument("--max-iterations", type=int, help="stop after this many iterations")
    run.add_argument("--deadline", metavar="HH:MM", help="stop at this time on the local clock")
    run.add_argument("--max-hours", type=float, help="stop after this many hours")
    run.add_argument("--target", type=float, help="stop once the best metric reaches this value")
    run.add_argument("--patience", type=int, metavar="K", help="stop after K iterations without a keep")
    run.add_argument("--tag", help="campaign branch autoraysearch/TAG (default: this folder's campaign, or today's date)")
    run.add_argument("--trial-timeout", type=float, metavar="SECONDS", help="kill a trial after this long")
    run.add_argument("--parallel", type=int, default=1, metavar="N", help="candidates trained at once per iteration")
    run.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the campaign's setting)")
    run.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default: the campaign's)")
    run.add_argument("--seeds", type=int, metavar="K", help="seeds a promising candidate is confirmed over (default: the campaign's)")
    run.add_argument("--min-delta", type=float, help="the smallest gain worth keeping (default: the campaign's, 0)")
    run.add_argument("--stuck-after", type=int, metavar="K",
                     help="after K iterations without a keep, propose bolder changes (default: the campaign's, 3)")
    run.add_argument("--no-early-stop", dest="early_stop", action="store_const", const=False, default=None,
                     help="train every candidate to the end, even one clearly behind the best's learning curve")
    together = run.add_mutually_exclusive_group()
    together.add_argument("--seeds-in-one-run", dest="seeds_in_one_run", action="store_const", const=True, default=None,
                          help="train a candidate's seeds in one run, each in a fork of its own (default: the "
                               "campaign's, chosen by setup: on where a run is mostly start-up)")
    together.add_argument("--seeds-apart", dest="seeds_in_one_run", action="store_const", const=False,
                          help="a run per seed: screen at one seed, then more seeds for a promising candidate")
    _add_ideator_options(run)
    _add_cluster_options(run)

    status = commands.add_parser("status", help="the results table, the best so far, and whether a run is active")
    status.add_argument("experiment_dir", nargs="?", default=".", help="experiment folder (default: here)")

    show = commands.add_parser("show", help="one candidate's description, result, diff of model.py and log tail")
    show.add_argument("label", help="the candidate's iteration label in the results log, e.g. 5 or 5b")
    show.add_argument("experiment_dir", nargs="?", default=".", help="experiment folder (default: here)")

    report = commands.add_parser("report", help="the results table and the progress plot (PNG)")
    report.add_argument("experiment_dir", nargs="?", default=".", help="experiment folder (default: here)")
    report.add_argument("--plot", metavar="PATH", help="where to write the PNG (default: .autoraysearch/progress.png)")

    plan = commands.add_parser("plan", help="guided set-up: goal, model, train.py, baseline, then launch the loop")
    plan.add_argument("experiment_dir", nargs="?", default=".", help="experiment folder, a git repository (default: here)")
    plan.add_argument("--goal", help="what you want from the model, in plain words (skips that question)")
    _add_cluster_options(plan)

    demo = commands.add_parser("demo", help="set up and run the bundled digits example in a new folder")
    demo.add_argument("directory", nargs="?", help="where to create it (default: ./autoraysearch-demo-TIME)")
    demo.add_argument("--iterations", type=int, default=5, help="loop iterations to run (default 5)")
    demo.add_argument("--epochs", type=int, default=3, help="training epochs per trial (default 3)")
    _add_cluster_options(demo)
    return parser


def _add_setup_options(parser: argparse.ArgumentParser) -> None:
    """setup's flags, one per entry of the setup options' list (model.py is the positional argument)."""
    from autoraysearch.setup.options import MODEL_PY, SETUP_OPTIONS

    parser.add_argument(MODEL_PY.name, help=MODEL_PY.help)
    budget = parser.add_mutually_exclusive_group()
    for option in SETUP_OPTIONS:
        if option is not MODEL_PY:
            (budget if option.budget else parser).add_argument(option.flag, **option.argparse_kwargs())


def _add_ideator_options(parser: argparse.ArgumentParser) -> None:
    """Who proposes the changes; each option overrides autoraysearch.toml for this run."""
    parser.add_argument(
        "--ideator", choices=["mutate", "openai", "anthropic", "command"],
        help="mutate (offline, rule-based), openai (any OpenAI-compatible endpoint), anthropic, or command",
    )
    parser.add_argument("--model", dest="llm_model", help="the LLM's model name, e.g. gpt-4.1 or claude-sonnet-4-5")
    parser.add_argument("--base-url", dest="llm_base_url", help="an OpenAI-compatible server, e.g. http://localhost:11434/v1")
    parser.add_argument("--command", dest="llm_command", help="for --ideator command: a CLI that reads the prompt on stdin")
    parser.add_argument("--api-key-block", help="a Prefect Secret block holding the API key (default: the environment)")
    parser.add_argument("--goal", help="what you want from the model, in plain words (the LLM ideators read it)")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray-address", help="attach to this Ray cluster ('auto', 'HOST:PORT', 'ray://HOST:10001'); default: a local Ray"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_llm_keys_private()  # candidate code may read any process's /proc/PID/environ
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet_prefect_notice()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # A job started in the background by a script inherits SIGINT ignored; `kill -INT` must still stop it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return COMMANDS[args.command](args)
    except AutoraysearchError as exc:
        print(f"autoraysearch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("autoraysearch: stopped; the campaign branch is on its best commit.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # git, the disk, the OS, a lost cluster: a sentence, the details in a file
        details = _write_traceback(exc)
        print(f"autoraysearch: {describe_failure(exc)}. The results log and the branch are as the last "
              f"completed step left them (details: {details}).", file=sys.stderr)
        return 1


def _write_traceback(exc: BaseException) -> str:
    """The failure's full traceback in a temporary file, for a bug report; its path."""
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="autoraysearch-error-", suffix=".txt", delete=False) as handle:
        handle.write("".join(traceback.format_exception(exc)))
    return handle.name


def quiet_prefect_notice() -> None:
    """No first-run telemetry banner from Prefect's client where its analytics are off.

    That is the case for the private server a command starts (see local_prefect_api) and wherever the
    user turned them off; Prefect's client only reads DO_NOT_TRACK, so say it there too, before Prefect
    is imported.
    """
    private_server = "PREFECT_API_URL" not in os.environ
    analytics_off = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "").lower() in ("false", "0", "no")
    if private_server or analytics_off:
        os.environ.setdefault("DO_NOT_TRACK", "1")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_setup(args: argparse.Namespace) -> int:
    from autoraysearch.views.step_logs import fmt

    _check_setup_options(args)
    model_path = Path(args.model_py).resolve()
    experiment_dir = model_path.parent
    _precheck_setup(experiment_dir, model_path.name, args)
    summary = _with_services(args.ray_address, lambda: _run_setup(experiment_dir, model_path.name, args))
    print(f"train.py and autoraysearch.toml committed in {summary.experiment_dir}")
    print(f"baseline {summary.metric}={fmt(summary.baseline)} ({summary.seconds:.1f} s); {summary.noise}")
    for line in summary.summary:
        print(f"  {line}")
    if summary.archived_results:
        print(f"the previous campaign's results were kept in {summary.archived_results}")
    return 0


def _precheck_setup(experiment_dir: Path, model_py: str, args: argparse.Namespace) -> None:
    """Fail fast, before any service starts, on every mistake setup can see without training."""
    from autoraysearch.setup.folder import plan_setup, refuse_model_failing_preflight

    refuse_model_failing_preflight(plan_setup(experiment_dir, **_setup_options(model_py, args)))


def _check_setup_options(args: argparse.Namespace) -> None:
    """setup's numbers, each against the range it allows."""
    from autoraysearch.setup.prechecks import check_option, positive_finite

    check_option("--epochs", args.epochs, setting="epochs")
    check_option("--time-budget", args.time_budget, setting="time_budget")
    check_option("--seed", args.seed, setting="seed")
    check_option("--seeds", args.seeds, setting="seeds")
    check_option("--batch-size", args.batch_size, rule=lambda v: v >= 1, allowed="1 or more")
    check_option("--learning-rate", args.learning_rate, rule=positive_finite, allowed="a positive, finite number")
    check_option("--weight-decay", args.weight_decay, rule=lambda v: positive_finite(v) or v == 0,
                 allowed="0 or a positive, finite number")
    _check_trial_options(args)


def _check_trial_options(args: argparse.Namespace) -> None:
    from autoraysearch.campaign.settings import processes_for
    from autoraysearch.setup.prechecks import check_option

    if args.gpus_per_trial is not None:
        processes_for(args.gpus_per_trial)  # says why 1.5 GPUs cannot work: DDP needs whole GPUs
    check_option("--trial-timeout", args.trial_timeout, setting="trial_timeout")
    check_option("--cpus-per-trial", args.cpus_per_trial, setting="cpus_per_trial")
    check_option("--gpus-per-trial", args.gpus_per_trial, setting="gpus_per_trial")


def _setup_options(model_py: str, args: argparse.Namespace) -> dict:
    from autoraysearch.setup.options import SETUP_OPTIONS

    return {option.name: option.value(getattr(args, option.name)) for option in SETUP_OPTIONS} | {"model_py": model_py}


def _run_setup(experiment_dir: Path, model_py: str, args: argparse.Namespace):
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    return autoraysearch_setup(experiment_dir=str(experiment_dir), **_setup_options(model_py, args))


def cmd_run(args: argparse.Namespace) -> int:
    from autoraysearch.campaign.opening import check_ready, with_overrides

    experiment_dir = Path(args.experiment_dir).resolve()
    _check_run_options(args, experiment_dir)
    ready = check_ready(experiment_dir)
    _precheck_ideator(with_overrides(ready.settings, _ideator_overrides(args)))
    try:
        summary = _with_services(args.ray_address, lambda: _run_loop(experiment_dir, args))
    except KeyboardInterrupt:
        _print_results(experiment_dir, last=20)
        raise
    _print_results(experiment_dir, last=20)
    print(f"stopped: {summary.stop_reason}; campaign branch {summary.branch}")
    return 0


def _check_run_options(args: argparse.Namespace, experiment_dir: Path) -> None:
    """run's options, each against what it allows; the loop would otherwise refuse them after start-up."""
    from autoraysearch.campaign.opening import BRANCH_PREFIX
    from autoraysearch.setup.prechecks import check_option, check_parallel, check_tag
    from autoraysearch.campaign.stopping import StopConditions, parse_deadline, validate

    check_parallel(args.parallel)
    validate(StopConditions(max_iterations=args.max_iterations, max_hours=args.max_hours, target=args.target,
                            patience=args.patience))
    if args.deadline:
        parse_deadline(args.deadline, datetime.now())
    _check_trial_options(args)
    for flag, name in (("--seeds", "seeds"), ("--min-delta", "min_delta"), ("--stuck-after", "stuck_after"),
                       ("--no-early-stop", "early_stop"), ("--seeds-in-one-run", "seeds_in_one_run")):
        check_option(flag, getattr(args, name), setting=name)
    check_tag(args.tag, BRANCH_PREFIX, experiment_dir)


def _ideator_overrides(args: argparse.Namespace) -> dict:
    names = ("ideator", "llm_model", "llm_base_url", "llm_command", "api_key_block", "goal")
    return {name: getattr(args, name) for name in names}


def _decision_overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in ("seeds", "min_delta", "stuck_after", "early_stop", "seeds_in_one_run")}


def _precheck_ideator(settings) -> None:
    """A missing model name, command or API key is refused before Ray and Prefect start."""
    if settings.ideator == "mutate":
        return
    from autoraysearch.ideators.llm.ideator import campaign_api_key, config_from_settings, refuse_missing_command

    config = config_from_settings(settings)
    if settings.ideator == "command":
        refuse_missing_command(config)
    if settings.api_key_block:
        config.validate()  # the block itself is read once the Prefect API is up
    else:
        campaign_api_key(config)


def _run_loop(experiment_dir: Path, args: argparse.Namespace):
    from autoraysearch.flows.loop import autoraysearch_loop
    from autoraysearch.views.live_view import live_view

    with live_view(experiment_dir):  # each running trial's epoch, metric and time left, while the loop waits
        return autoraysearch_loop(
            experiment_dir=str(experiment_dir), max_iterations=args.max_iterations, deadline=args.deadline,
            max_hours=args.max_hours, target=args.target, patience=args.patience, tag=args.tag,
            trial_timeout=args.trial_timeout, parallel=args.parallel, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, **_ideator_overrides(args), **_decision_overrides(args),
        )


def cmd_status(args: argparse.Namespace) -> int:
    from autoraysearch.campaign.experiment import ExperimentPaths, read_campaign_branch
    from autoraysearch.campaign.lock import read_holder
    from autoraysearch.campaign.repository import ExperimentRepo
    from autoraysearch.campaign.settings import load_settings

    repo = ExperimentRepo(Path(args.experiment_dir))
    paths = ExperimentPaths(repo.experiment_dir)
    settings = load_settings(paths.root)
    lines = []
    branch = read_campaign_branch(paths)
    if branch and repo.branch_exists(branch):
        lines.append(f"campaign branch {branch} at {repo.short(repo.branch_sha(branch))}")
    else:
        lines.append("no campaign branch yet: `autoraysearch run` creates one")
    holder = read_holder(paths.lock)
    if holder is not None and holder.is_alive():
        lines.append(f"a run is active (pid {holder.pid} on {holder.host}, since {holder.started})")
    else:
        lines.append("no run is active")
    lines.append(f"metric {settings.metric} ({settings.direction} is better), ideator {settings.ideator}")
    if sys.stdout.isatty():
        from autoraysearch.campaign.results_log import read_results_log
        from autoraysearch.campaign.settings import RESULTS_FILE
        from autoraysearch.views.status_view import print_status

        print_status(read_results_log(paths.root / RESULTS_FILE, settings.higher_is_better), settings, lines,
                     sys.stdout)
        return 0
    _print_results(paths.root)
    print("\n".join(lines))
    return 0


def _print_results(experiment_dir: Path, last: int | None = None) -> None:
    from autoraysearch.views.report import best_line, format_table
    from autoraysearch.campaign.results_log import read_results_log
    from autoraysearch.campaign.settings import RESULTS_FILE, load_settings

    settings = load_settings(experiment_dir)
    log = read_results_log(experiment_dir / RESULTS_FILE, settings.higher_is_better)
    from autoraysearch.campaign.path import describe_confirmed

    print(format_table(log, last=last))
    print(best_line(log, settings.metric, settings))
    print(describe_confirmed(log.rows))


def cmd_report(args: argparse.Namespace) -> int:
    from autoraysearch.views.artifacts import plot_path
    from autoraysearch.campaign.experiment import ExperimentPaths
    from autoraysearch.views.progress_plot import save_progress_plot
    from autoraysearch.campaign.repository import ExperimentRepo
    from autoraysearch.campaign.results_log import read_results_log
    from autoraysearch.campaign.settings import load_settings

    paths = ExperimentPaths(ExperimentRepo(Path(args.experiment_dir)).experiment_dir)
    settings = load_settings(paths.root)
    log = read_results_log(paths.results, settings.higher_is_better)
    if not log.rows:
        raise AutoraysearchError(f"{paths.results} holds no results yet; run `autoraysearch setup {settings.model_py}` first.")
    _print_results(paths.root)
    target = Path(args.plot).resolve() if args.plot else plot_path(paths)
    save_progress_plot(log, settings.metric, target)
    print(f"progress plot written to {target}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from autoraysearch.campaign.memory import known_labels, nearest_labels, show_candidate
    from autoraysearch.campaign.experiment import ExperimentPaths
    from autoraysearch.campaign.repository import ExperimentRepo
    from autoraysearch.campaign.results_log import read_results_log, terminal_text
    from autoraysearch.campaign.settings import load_settings

    paths = ExperimentPaths(ExperimentRepo(Path(args.experiment_dir)).experiment_dir)
    settings = load_settings(paths.root)
    log = read_results_log(paths.results, settings.higher_is_better)
    text = show_candidate(paths, log, args.label, settings.metric)
    if text is None:
        nearest = nearest_labels(args.label, known_labels(paths, log))
        hint = f"the nearest are {', '.join(nearest)}" if nearest else "it holds no candidates yet"
        raise AutoraysearchError(f"{paths.results} has no candidate labelled {args.label!r}; {hint}.")
    print(terminal_text(text))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from autoraysearch.setup.folder import plan_setup, refuse_model_failing_preflight
    from autoraysearch.setup.wizard import ask_all, launch_steps, loop_options, prepare_model, run_command, setup_options, setup_steps
    from autoraysearch.campaign.repository import ExperimentRepo

    root = ExperimentRepo(Path(args.experiment_dir)).experiment_dir
    print(f"Planning a campaign in {root}. Press Enter to take the answer in [brackets].")
    answers = ask_all(setup_steps(root), _ask_at_terminal, answers={"goal": args.goal} if args.goal else None)
    prepare_model(root, answers)
    options = setup_options(answers)
    # Everything checkable without training, before services start.
    refuse_model_failing_preflight(plan_setup(root, **options))

    def baseline_then_launch():
        from autoraysearch.views.step_logs import fmt
        from autoraysearch.flows.loop import autoraysearch_loop
        from autoraysearch.flows.setup_experiment import autoraysearch_setup

        setup = autoraysearch_setup(experiment_dir=str(root), **options)
        print(f"baseline {setup.metric}={fmt(setup.baseline)} ({setup.seconds:.1f} s)")
        for line in setup.summary:
            print(f"  {line}")
        launch = ask_all(launch_steps(), _ask_at_terminal)
        if not launch["launch"]:
            print(f"not launched; start it later with: {run_command(root, launch)}")
            return None
        return autoraysearch_loop(experiment_dir=str(root), **loop_options(launch))

    try:
        summary = _with_services(args.ray_address, baseline_then_launch)
    except KeyboardInterrupt:
        if (root / "autoraysearch.toml").exists():
            _print_results(root, last=20)
        raise
    if summary is not None:
        _print_results(root, last=20)
        print(f"stopped: {summary.stop_reason}; campaign branch {summary.branch}")
    return 0


def _ask_at_terminal(question, reason: str | None) -> str:
    if reason:
        print(f"  not accepted: {reason}")
    default = f" [{question.default}]" if question.default else ""
    try:
        return input(f"{question.text}{default} ")
    except EOFError:
        raise AutoraysearchError("the input ended before every question was answered; run `autoraysearch plan` again.") from None


def cmd_demo(args: argparse.Namespace) -> int:
    from autoraysearch.setup.prechecks import check_option

    check_option("--iterations", args.iterations, rule=lambda v: v >= 1, allowed="1 or more")
    check_option("--epochs", args.epochs, setting="epochs")
    target = Path(args.directory or f"autoraysearch-demo-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    if target.exists() and any(target.iterdir()):
        raise AutoraysearchError(f"{target} already exists and is not empty; pass a new folder for the demo.")
    create_demo_folder(target)
    print(f"demo experiment in {target}")

    def setup_and_run():
        setup_args = build_parser().parse_args(["setup", str(target / "model.py"), "--epochs", str(args.epochs)])
        _run_setup(target, "model.py", setup_args)
        run_args = build_parser().parse_args(["run", str(target), "--max-iterations", str(args.iterations)])
        return _run_loop(target, run_args)

    try:
        _with_services(args.ray_address, setup_and_run)
    finally:
        if (target / "autoraysearch.toml").exists():
            _print_results(target)
    print(f"next: cd {target} && autoraysearch run   (Ctrl-C stops it)")
    return 0


def create_demo_folder(target: Path) -> None:
    """A new git repository holding the demo's model.py (a first-draft digits MLP with room to improve), committed."""
    target.mkdir(parents=True, exist_ok=True)
    example = resources.files("autoraysearch.examples") / "digits_draft" / "model.py"
    (target / "model.py").write_text(example.read_text())
    git = ["git", "-C", str(target)]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    identity = ["-c", "user.name=autoraysearch demo", "-c", "user.email=demo@autoraysearch.invalid"]
    subprocess.run(git + ["add", "model.py"], check=True)
    subprocess.run(git + identity + ["commit", "-q", "-m", "first-draft digits MLP"], check=True)


def _with_services(ray_address: str | None, work):
    """Run work with a Prefect API (the configured one, or a local server) and one Ray connection."""
    from autoraysearch.cluster import cluster_stopped, describe_address, ray_session, refuse_unreachable, resolve_address
    from autoraysearch.setup.prechecks import refuse_long_ray_temp_dir
    from autoraysearch.prefect_api import hide_refusal_tracebacks, local_prefect_api

    address = resolve_address(ray_address)
    print(describe_address(ray_address))
    refuse_unreachable(address)  # before minutes are spent starting anything
    refuse_long_ray_temp_dir(address)
    with local_prefect_api(), ray_session(ray_address), hide_refusal_tracebacks():
        signal.signal(signal.SIGTERM, _raise_interrupt)  # ray.init replaced it with a bare sys.exit
        try:
            return work()
        except Exception as exc:
            if isinstance(exc, AutoraysearchError) or not cluster_stopped(address):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise AutoraysearchError(
                f"the Ray cluster at {address} stopped answering during the command ({first}); start it again "
                "(`ray start --head`) and rerun the command, or pass --ray-address local to use a private one."
            ) from None


COMMANDS = {
    "setup": cmd_setup, "run": cmd_run, "status": cmd_status, "demo": cmd_demo, "report": cmd_report, "plan": cmd_plan,
    "show": cmd_show,
}


if __name__ == "__main__":
    sys.exit(main())
