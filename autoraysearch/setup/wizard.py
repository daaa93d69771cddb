"""The plan wizard's questions: goal, model file, train.py, baseline settings, then how to run the loop.

Each question has a check that turns the typed text into a value or raises a user error whose one
sentence is shown when the question is asked again. The terminal (`autoraysearch plan`) and the
Prefect flow (`autoraysearch-plan`, asking through a paused flow run) drive the same questions.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from autoraysearch.setup.datasets import (
    CUSTOM,
    CUSTOM_CONTRACT,
    IMAGE_SETS,
    KNOWN,
    describe_dataset,
    find_image_files,
    resolve_path,
    where_to_put,
)
from autoraysearch.errors import AutoraysearchError
from autoraysearch.setup.folder import GENERATED_MARKER, user_train_source
from autoraysearch.campaign.model_source import defines_model, parse_model_source, parse_python
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.stopping import parse_deadline

Answers = dict[str, Any]


@dataclass(frozen=True)
class Question:
    """One thing the wizard asks: its text, the answer taken when none is typed, and its check."""

    key: str
    text: str
    default: str
    check: Callable[[str], Any]  # typed text -> value, or AutoraysearchError saying what is wrong

    @property
    def label(self) -> str:
        """The answer's name in a few words, as the UI's form calls its box."""
        return LABELS.get(self.key, self.key)


LABELS = {
    "goal": "Your goal", "model_py": "Model file", "alias": "Model class", "train_py": "Your own train.py",
    "metric": "Metric name", "direction": "Better is (higher/lower)", "dataset": "Dataset",
    "data_dir": "Dataset folder", "download": "Download the dataset (yes/no)", "data_module": "Data module",
    "budget": "Training per trial (epochs, or 300s, 10m)", "gpus_per_trial": "GPUs per trial",
    "parallel": "Candidates per iteration", "stop": "Stop after (20, 07:00, 8h or empty)",
    "ideator": "Who proposes changes", "llm_model": "LLM model name", "llm_base_url": "LLM server URL (or empty)",
    "llm_command": "Ideator command",
    "launch": "Start the campaign now (yes/no)",
}


Step = Callable[[Answers], "Question | None"]  # None: the question does not apply to these answers


def ask_all(steps: list[Step], ask: Callable[[Question, str | None], str], answers: Answers | None = None,
            accepted: Callable[[Question, str], None] | None = None) -> Answers:
    """Ask each question that applies, again and again with the reason, until its check accepts the answer.

    `accepted` is told each answer its check took (the default when nothing was typed).
    """
    answers = dict(answers or {})
    for step in steps:
        question = step(answers)
        if question is None:
            continue
        reason = None
        while True:
            text = ask(question, reason).strip() or question.default
            try:
                answers[question.key] = question.check(text)
            except AutoraysearchError as exc:
                reason = str(exc)
                continue
            if accepted is not None:
                accepted(question, text)
            break
    return answers


# ---- the questions before the baseline ----


def setup_steps(experiment_dir: Path) -> list[Step]:
    """Goal, model file (and its `Model` alias), train.py, and what the baseline trial needs."""
    repo = ExperimentRepo(experiment_dir)
    root = repo.experiment_dir

    def goal(answers: Answers) -> Question | None:
        if answers.get("goal"):  # given on the command line (plan --goal)
            return None
        return Question("goal", "What do you want from the model, in plain words?", "better validation accuracy",
                        lambda text: text)

    def model_py(answers: Answers) -> Question:
        return Question("model_py", f"Which file holds your model (a torch.nn.Module named Model), relative to {root}?",
                        "model.py", lambda text: check_model_file(repo, text))

    def alias(answers: Answers) -> Question | None:
        name = answers["model_py"]
        classes = model_classes((root / name).read_text())
        if not classes:  # it defines Model itself
            return None
        return Question(
            "alias",
            f"{name} has no `Model`. Which class is your model? autoraysearch adds `Model = <class>` at the end "
            f"of {name} and commits it (classes: {', '.join(classes)}).",
            classes[-1], lambda text: check_alias(root / name, text),
        )

    def train_py(answers: Answers) -> Question:
        return Question("train_py", "Use a training script of your own? Give its path, or leave it empty to "
                        "generate train.py.", "", lambda text: check_train_py(repo, text, answers["model_py"]))

    def metric(answers: Answers) -> Question | None:
        if not answers["train_py"]:
            return None
        return Question("metric", "Which metric does your train.py print last, as NAME=VALUE?", "val_acc",
                        check_metric_name)

    def direction(answers: Answers) -> Question | None:
        if not answers["train_py"]:
            return None
        guess = "lower" if re.search(r"loss|error|mse|mae|perplexity", answers["metric"], re.I) else "higher"
        return Question("direction", f"Is a higher or a lower {answers['metric']} better (higher/lower)?", guess,
                        check_direction)

    def dataset(answers: Answers) -> Question | None:
        if answers["train_py"]:
            return None
        return Question("dataset", f"Which dataset should train.py load? One of {KNOWN} ('digits' is bundled "
                        "and offline; npz: an .npz file holding X_train, y_train, X_val and y_val).", "digits",
                        lambda text: check_dataset_name(text, root))

    def data_dir(answers: Answers) -> Question | None:
        name = answers.get("dataset")
        if name not in IMAGE_SETS:
            return None
        return Question("data_dir", f"Which folder holds the {IMAGE_SETS[name].title} files ({where_to_put(name)})? "
                        "If they are not there yet, it is where they will be downloaded.", "data",
                        lambda text: check_data_dir(name, root, text))

    def download(answers: Answers) -> Question | None:
        name = answers.get("dataset")
        if name not in IMAGE_SETS or find_image_files(name, Path(answers["data_dir"])) is not None:
            return None
        return Question("download", f"The {IMAGE_SETS[name].title} files are not in {answers['data_dir']}. "
                        "Should train.py download them there with torchvision (it needs network access), yes/no?",
                        "yes", lambda text: check_download(name, answers["data_dir"], text))

    def data_module(answers: Answers) -> Question | None:
        if answers.get("dataset") != CUSTOM:
            return None
        return Question("data_module", f"Which file next to model.py is your data module? It must {CUSTOM_CONTRACT}.",
                        "data.py", lambda text: check_data_module(root, text))

    def budget(answers: Answers) -> Question | None:
        if answers["train_py"]:
            return None
        return Question("budget", "How long should each trial train? A number of epochs (5) or a time budget "
                        "in seconds (300s) or minutes (10m).", "5", check_budget)

    def gpus(answers: Answers) -> Question:
        return Question("gpus_per_trial", "How many GPUs per trial? auto: 1 on a cluster with GPUs, else 0; 0 for "
                        "CPU only, 0.5 to share a GPU between two trials, 2 or more for DDP on one node.", "auto",
                        check_gpus)

    return [goal, model_py, alias, train_py, metric, direction, dataset, data_dir, download, data_module, budget, gpus]


def check_model_file(repo: ExperimentRepo, text: str) -> str:
    path = Path(text).expanduser()
    path = (path if path.is_absolute() else repo.experiment_dir / path).resolve()
    if not path.is_file():
        raise AutoraysearchError(f"{path} does not exist; give the path of your model file.")
    if path.parent != repo.experiment_dir:
        raise AutoraysearchError(
            f"{path} is not in the experiment folder {repo.experiment_dir}; move it there or plan from its folder."
        )
    tree = parse_model_source(path.read_text(), path.name)
    if not defines_model(tree) and not model_classes(path.read_text()):
        raise AutoraysearchError(f"{path.name} defines no class; give the file that holds your nn.Module.")
    if repo.uncommitted([path.name]):
        raise AutoraysearchError(
            f"{path.name} has uncommitted changes; commit it (git add {path.name} && git commit) and answer again."
        )
    return path.name


def model_classes(source: str) -> list[str]:
    """Top-level classes that could be the model, when the file has no `Model` (empty when it has one)."""
    tree = parse_python(source)
    if defines_model(tree):
        return []
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    modules = [c.name for c in classes if any("Module" in ast.unparse(b) for b in c.bases)]
    return modules or [c.name for c in classes]


def check_alias(path: Path, text: str) -> str | None:
    """The class `Model` should name; None when the file has meanwhile defined `Model` itself."""
    classes = model_classes(path.read_text())
    if not classes:
        return None
    if text not in classes:
        raise AutoraysearchError(
            f"autoraysearch trains the class named `Model` and {path.name} has none; answer one of "
            f"{', '.join(classes)}, or rename your class to `Model`, commit {path.name} and answer again."
        )
    return text


def add_model_alias(experiment_dir: Path, model_py: str, class_name: str) -> str:
    """Append `Model = class_name` to model.py and commit that file alone; return the commit's SHA."""
    repo = ExperimentRepo(experiment_dir)
    path = repo.experiment_dir / model_py
    source = path.read_text()
    path.write_text(source.rstrip("\n") + f"\n\n# The name autoraysearch trains.\nModel = {class_name}\n")
    return repo.commit_files([model_py], f"autoraysearch plan: Model = {class_name} in {model_py}")


def check_train_py(repo: ExperimentRepo, text: str, model_py: str) -> str | None:
    if text:
        user_train_source(repo.experiment_dir, Path(text).expanduser(), model_py)
        return text
    existing = repo.experiment_dir / "train.py"
    if existing.exists() and GENERATED_MARKER not in existing.read_text() and (
        not repo.is_tracked("train.py") or repo.uncommitted(["train.py"])
    ):
        raise AutoraysearchError(
            f"{existing} exists and is not committed, and a generated train.py would replace it; "
            "give its path to use it, or move it away."
        )
    return None


def check_metric_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", text):
        raise AutoraysearchError(f"{text!r} is not a metric name; give the NAME of the NAME=VALUE line, e.g. val_acc.")
    return text


def check_direction(text: str) -> str:
    if text.lower() not in ("higher", "lower"):
        raise AutoraysearchError(f"{text!r} is neither higher nor lower; answer higher or lower.")
    return text.lower()


def check_dataset_name(text: str, root: Path) -> str:
    """A known dataset (an image set's folder and a custom data module are asked next), or a readable npz."""
    if text in IMAGE_SETS or text == CUSTOM:
        return text
    describe_dataset(text, root)  # a user error for an unknown name or an unusable .npz
    return text


def check_data_dir(name: str, root: Path, text: str) -> str:
    folder = resolve_path(text, root)
    if folder.exists() and not folder.is_dir():
        raise AutoraysearchError(f"{folder} is a file; give the folder that holds (or will hold) the dataset.")
    if folder.is_dir() and find_image_files(name, folder) is not None:
        describe_dataset(name, root, data_dir=str(folder))  # the files found must be readable
    return str(folder)


def check_download(name: str, data_dir: str, text: str) -> bool:
    if check_yes_no(text):
        return True
    if find_image_files(name, Path(data_dir)) is None:
        raise AutoraysearchError(
            f"train.py cannot train without the {IMAGE_SETS[name].title} files; put {where_to_put(name)} "
            f"in {data_dir} and answer no again, or answer yes to download them."
        )
    describe_dataset(name, Path(data_dir), data_dir=data_dir)  # the files put there must be readable
    return False


def check_data_module(root: Path, text: str) -> str:
    describe_dataset(CUSTOM, root, data_module=text)  # runs it once, as train.py will
    return text


def check_budget(text: str) -> dict[str, float | int]:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min)?", text.lower())
    if not match or float(match.group(1)) <= 0 or (not match.group(2) and "." in match.group(1)):
        raise AutoraysearchError(
            f"{text!r} is not a training budget; write a number of epochs (5) or seconds (300s) or minutes (10m)."
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit is None:
        return {"epochs": int(value)}
    return {"time_budget": value * (60 if unit.startswith("m") else 1)}


def check_gpus(text: str) -> float | None:
    """None for auto: the cluster decides once Ray is up (the questions are asked before it starts)."""
    if text.strip().lower() in ("", "auto"):
        return None
    try:
        gpus = float(text)
    except ValueError:
        raise AutoraysearchError(f"{text!r} is not a number of GPUs; answer 0, 0.5, 1, 2…") from None
    if gpus < 0 or (gpus > 1 and not gpus.is_integer()):
        raise AutoraysearchError(f"{text} GPUs cannot be given to a trial; use 0, a fraction below 1, or a whole number.")
    return gpus


def setup_options(answers: Answers) -> dict[str, Any]:
    """The answers as keyword arguments of the setup flow (and of plan_setup)."""
    options: dict[str, Any] = dict(model_py=answers["model_py"], goal=answers["goal"],
                                   gpus_per_trial=answers["gpus_per_trial"])
    if answers["train_py"]:
        options.update(train_py=answers["train_py"], metric=answers["metric"], direction=answers["direction"])
    else:
        options.update(dataset=answers["dataset"], **answers["budget"])
        options.update({k: answers[k] for k in ("data_dir", "download", "data_module") if answers.get(k) is not None})
    return options


def prepare_model(experiment_dir: Path, answers: Answers) -> None:
    """Add the `Model` alias the user chose, if any."""
    if answers.get("alias"):
        add_model_alias(experiment_dir, answers["model_py"], answers["alias"])


# ---- the questions after the baseline ----


def launch_steps() -> list[Step]:
    """Sequential or parallel, when to stop, and whether to start now."""

    def parallel(answers: Answers) -> Question:
        return Question("parallel", "How many candidates per iteration? 1 tries one change at a time; N trains "
                        "N different changes at once and keeps the best.", "1", check_parallel)

    def stop(answers: Answers) -> Question:
        return Question("stop", "When should the campaign stop? A number of iterations (20), a time of day "
                        "(07:00), a number of hours (8h), or leave it empty to run until you stop it.", "", check_stop)

    def ideator(answers: Answers) -> Question:
        return Question("ideator", "Who should propose the changes? mutate (offline rules; it ignores the goal), "
                        "openai (any OpenAI-compatible endpoint), anthropic, or command (a CLI that reads the prompt "
                        "on stdin, such as 'claude -p').", "mutate", check_ideator)

    def llm_model(answers: Answers) -> Question | None:
        if answers["ideator"] not in ("openai", "anthropic"):
            return None
        return Question("llm_model", "Which model should it ask (e.g. gpt-4.1, claude-sonnet-4-5)?", "",
                        lambda text: check_given(text, "the model's name"))

    def llm_base_url(answers: Answers) -> Question | None:
        if answers["ideator"] != "openai":
            return None
        return Question("llm_base_url", "Which server (e.g. http://localhost:11434/v1 for Ollama)? Leave it empty "
                        "for OpenAI's own.", "", lambda text: text or None)

    def llm_command(answers: Answers) -> Question | None:
        if answers["ideator"] != "command":
            return None
        return Question("llm_command", "Which command should read the prompt on stdin and answer on stdout?", "",
                        lambda text: check_given(text, "a command line"))

    def launch(answers: Answers) -> Question:
        return Question("launch", "Start the campaign now (yes/no)?", "yes", check_yes_no)

    return [parallel, stop, ideator, llm_model, llm_base_url, llm_command, launch]


IDEATORS = ("mutate", "openai", "anthropic", "command")


def check_ideator(text: str) -> str:
    if text not in IDEATORS:
        raise AutoraysearchError(f"{text!r} is not an ideator; answer one of {', '.join(IDEATORS)}.")
    return text


def check_given(text: str, what: str) -> str:
    if not text:
        raise AutoraysearchError(f"this ideator needs {what}; type it.")
    return text


def check_parallel(text: str) -> int:
    from autoraysearch.setup.prechecks import MAX_PARALLEL

    if not text.isdigit() or not 1 <= int(text) <= MAX_PARALLEL:
        raise AutoraysearchError(f"{text!r} is not a number of candidates; answer a whole number from 1 to {MAX_PARALLEL}.")
    return int(text)


def check_stop(text: str) -> dict[str, Any]:
    """Loop stop-condition arguments: {} (never), max_iterations, deadline or max_hours."""
    if not text:
        return {}
    if text.isdigit() and int(text) >= 1:
        return {"max_iterations": int(text)}
    if ":" in text:
        parse_deadline(text, datetime.now())
        return {"deadline": text}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*h", text.lower())
    if match and float(match.group(1)) > 0:
        return {"max_hours": float(match.group(1))}
    raise AutoraysearchError(
        f"{text!r} is not a stop condition; write iterations (20), a time of day (07:00) or hours (8h)."
    )


def check_yes_no(text: str) -> bool:
    if text.lower() in ("y", "yes"):
        return True
    if text.lower() in ("n", "no"):
        return False
    raise AutoraysearchError(f"{text!r} is neither yes nor no; answer yes or no.")


def loop_options(answers: Answers) -> dict[str, Any]:
    options = {"parallel": answers["parallel"], **answers["stop"]}
    if answers.get("ideator", "mutate") != "mutate":  # mutate is the campaign's default: nothing to say
        options["ideator"] = answers["ideator"]
        options.update({k: answers[k] for k in ("llm_model", "llm_base_url", "llm_command") if answers.get(k)})
    return options


def run_command(experiment_dir: Path, answers: Answers) -> str:
    """The `autoraysearch run` command that starts the planned campaign later."""
    flags = {"parallel": "--parallel", "max_iterations": "--max-iterations", "deadline": "--deadline",
             "max_hours": "--max-hours", "ideator": "--ideator", "llm_model": "--model", "llm_base_url": "--base-url",
             "llm_command": "--command"}
    options = loop_options(answers)
    if options["parallel"] == 1:
        del options["parallel"]
    words = [f"{flags[k]} {shlex.quote(str(v))}" for k, v in options.items()]
    return " ".join(["autoraysearch run", str(experiment_dir)] + words)
