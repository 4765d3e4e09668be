"""`stsweep demo`: the main job in one command. Starts the stack (embedded PostgreSQL unless
STSWEEP_DATABASE_URL is set), uploads a scored-pairs data set, runs a small real sweep of all-MiniLM-L6-v2,
pulls the best checkpoint and prints its score next to the untrained baseline's."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from service.cli.inert import markup
from service.cli.render import watch
from service.client.http import StsweepClient
from service.core.schemas import StudyPublic
from service.settings import Settings
from service.local.stack import running_stack

def demo_data_dir() -> Path:
    return Path(str(resources.files("service.local") / "demo_data"))


def demo_study(data: dict[str, Any], trials: int, every_n_examples: int) -> dict[str, Any]:
    return {
        "name": "demo-minilm-pairs",
        "description": "stsweep demo: all-MiniLM-L6-v2 fine-tuned on scored sentence pairs.",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "task": "scored_pairs",
        "data": data,
        "objective": {"metric": "spearman_cosine", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"distribution": "float", "low": 1e-5, "high": 1e-4, "log": True},
            "per_device_train_batch_size": {"distribution": "categorical", "choices": [16, 32]},
            "warmup_ratio": {"distribution": "float", "low": 0.0, "high": 0.2},
            "num_train_epochs": 1,
            "loss": "CoSENTLoss",
        },
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "median", "n_startup_trials": 2},
        "evaluation": {"every_n_examples": every_n_examples, "max_eval_samples": 100,
                       "early_stopping_patience": 3},
        "budget": {"n_trials": trials, "max_concurrent_trials": 1},
        "max_attempts": 2,
        "keep_top_k": 2,
    }


def upload_data(client: StsweepClient, train: Path, eval_: Path, test: Path | None,
                score_range: tuple[float, float], max_train_samples: int | None) -> dict[str, Any]:
    def upload(path: Path) -> dict[str, str]:
        return {"dataset_id": client.upload_dataset(path, "scored_pairs", score_range=score_range).id}

    data: dict[str, Any] = {"train": upload(train), "eval": upload(eval_), "score_range": list(score_range)}
    if test is not None:
        data["test"] = upload(test)
    if max_train_samples is not None:
        data["max_train_samples"] = max_train_samples
    return data


def hf_data(name: str, max_train_samples: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"train": {"hf": name, "split": "train"}, "eval": {"hf": name, "split": "validation"},
                            "test": {"hf": name, "split": "test"}}
    if max_train_samples is not None:
        data["max_train_samples"] = max_train_samples
    return data


def run_demo(settings: Settings, *, host: str, port: int, trials: int, out: Path, train: Path | None,
             eval_: Path | None, test: Path | None, hf: str | None, score_range: tuple[float, float],
             max_train_samples: int | None, every_n_examples: int, console: Console) -> int:
    logs = settings.home / "logs"
    with running_stack(settings, host, port, worker_args=("--gpus", "all"), log_dir=logs) as stack:
        console.print(f"logs: {logs}/api.log, {logs}/worker.log")
        console.print(f"dashboard: [bold]{stack.url}/[/bold]   token: [bold]{stack.token}[/bold]")
        with StsweepClient(stack.url, stack.token, timeout=120) as client:
            if hf is not None:
                data = hf_data(hf, max_train_samples)
            else:
                folder = demo_data_dir()
                bundled = train is None
                data = upload_data(client, train or folder / "train.jsonl", eval_ or folder / "dev.jsonl",
                                   test if not bundled else folder / "test.jsonl",
                                   (0.0, 1.0) if bundled else score_range, max_train_samples)
            study = client.create_study(demo_study(data, trials, every_n_examples))
            console.print(f"study [bold]{markup(study.id)}[/bold]: {trials} trials of "
                          f"{markup(study.spec and study.spec['base_model'])}")
            watch(client, study.id, interval=1.0, limit=10, console=console)
            final = client.get_study(study.id)
            if final.status != "completed" or final.best is None:
                console.print(f"[red]study ended {markup(final.status)}: "
                              f"{markup(final.status_reason or 'no trial completed')}")
                return 1
            folder = client.pull(study.id, out)
    report(final, folder, console)
    return 0


def report(study: StudyPublic, folder: Path, console: Console) -> None:
    assert study.best is not None
    baseline = study.baseline.value if study.baseline else None
    console.print(f"best trial #{study.best.trial_number}: {markup(study.objective['metric'])} "
                  f"[bold green]{study.best.value:.4f}[/bold green]"
                  + (f" vs baseline {baseline:.4f} ({study.best.value - baseline:+.4f})" if baseline else ""))
    if study.test is not None:
        console.print(f"test split ({markup(study.test.metric)}): {study.test.value:.4f}")
    console.print(f"params: {markup(study.best.params)}")
    console.print(f"model saved in [bold]{markup(folder)}[/bold]: SentenceTransformer({markup(repr(str(folder)))})")
