"""The server's workflow: FLARE's FedAvg, tolerant of a site that drops out, resumable, with a
last validation and report round, and nothing accepted that a site may not send.

Why a subclass of ``nvflare.app_common.workflows.fedavg.FedAvg`` (its rounds, its InTime
weighted averaging with the number of training exams as weight) and not the stock recipe:

- Stock FedAvg sends each round to ``min_clients`` sampled sites and waits for all of them, so a
  site that fails ends the job (FLARE's dynamic error mode panics once the remaining sites cannot
  reach the number it waits for). Here every site gets every round and a round needs
  ``min_clients`` answers: a failed site is left out (FLARE's ``min_responses``), a silent one is
  waited for ``straggler_wait_s`` after the others have answered.
- Every message is checked (``messages.check``) and written to the audit before it is used.
- After every round the global weights and progress are saved (``state``); a new run on the same
  state folder resumes after the last completed round (FLARE's simulator keeps no snapshot).
- After the rounds: ``validate`` (the last model's validation error; the ridge's sums), the round
  with the lowest pooled validation error is chosen, ``report`` (the chosen model on each site's
  held-out exams), and ``assemble`` writes the model folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.fedavg import FedAvg

from ..outputs import atomic_write_text
from . import messages, state
from .settings import META_KEY, RIDGE_KEY, Recipe

STRAGGLER_WAIT_S = 3600


class FederatedStiffness(FedAvg):
    def __init__(self, recipe: dict, sites: list, state_dir: str, out_dir: str, min_clients: int = 1,
                 options: dict | None = None):
        """``recipe``: ``settings.Recipe.to_dict()``; ``sites``: the FLARE site names; ``state_dir``:
        where the server keeps its state (resume) and audit; ``out_dir``: the model folder to write;
        ``options``: ``name``, ``synthetic``, ``straggler_wait_s``."""
        rec = Recipe.from_dict(recipe)
        super().__init__(num_clients=len(sites), num_rounds=rec.rounds, persistor_id="")
        self.recipe = recipe
        self.sites = sites
        self.state_dir = state_dir
        self.out_dir = out_dir
        self.min_clients = min_clients
        self.options = options
        self._recipe = rec
        self._global = None
        self._progress = None
        self._shapes = state.shapes(rec)
        self._round_val = []

    # --- state -----------------------------------------------------------------------------
    def _setup(self) -> None:
        folder = Path(self.state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        progress = state.read_progress(folder)
        if progress is not None:
            if not state.same_run(progress, self._recipe, self.sites):
                raise RuntimeError(f"{folder} holds the state of a run with another recipe or other sites")
            self._global = state.load_weights(folder / state.GLOBAL)
            self.info(f"resuming after round {progress['completed_rounds']} of {self._recipe.rounds}")
        else:
            self._global = state.initial_weights(self._recipe)
            state.save_weights(folder / state.GLOBAL, self._global)
            progress = {**state.run_identity(self._recipe, self.sites), "completed_rounds": 0,
                        "val_mse_by_round": {}, "best_round": None, "resumed_at": []}
        if {k: tuple(v.shape) for k, v in self._global.items()} != self._shapes:
            raise RuntimeError(f"{folder / state.GLOBAL} does not fit the recipe's network")
        if progress["completed_rounds"]:
            progress["resumed_at"] = [*progress.get("resumed_at", []), progress["completed_rounds"]]
        self._progress = progress
        state.write_progress(folder, progress)

    def _record_validation(self, rounds_done: int, parts: list[tuple[float, int]]) -> None:
        """The pooled validation MSE of the model after ``rounds_done`` rounds; keep it if best."""
        n = sum(p[1] for p in parts)
        if rounds_done < 1 or n == 0:
            return
        mse = sum(p[0] for p in parts) / n
        history = self._progress["val_mse_by_round"]
        history[str(rounds_done)] = round(mse, 6)
        best = self._progress["best_round"]
        if best is None or mse < history[str(best)] - 1e-9:
            self._progress["best_round"] = rounds_done
            if rounds_done == self._progress["completed_rounds"]:      # the model on disk is that one
                shutil.copyfile(Path(self.state_dir) / state.GLOBAL, Path(self.state_dir) / state.BEST)

    def _audit(self, task: str, result: FLModel, refused: str | None = None) -> None:
        meta = {k: v for k, v in (result.meta or {}).items() if k != "props"}
        state.append_audit(self.state_dir, {
            "task": task, "round": self.current_round, "site": meta.get("client_name"),
            "params": {k: list(getattr(v, "shape", ())) for k, v in (result.params or {}).items()},
            "param_types": sorted({type(v).__name__ for v in (result.params or {}).values()}),
            "metrics": result.metrics, "meta": meta, "refused": refused})

    # --- FedAvg hooks ----------------------------------------------------------------------
    def load_model(self) -> FLModel:
        return FLModel(params_type=ParamsType.FULL, params=self._global)

    def sample_clients(self, num_clients=None):
        return super().sample_clients(None)          # every site trains every round

    def send_model(self, task_name="train", data=None, targets=None, min_responses=None, timeout=0, callback=None):
        data.meta = {**(data.meta or {}), META_KEY: self.recipe}
        self._round_val = []
        self.broadcast_model(task_name=task_name, data=data, targets=targets, min_responses=self.min_clients,
                             timeout=timeout, blocking=False, callback=callback,
                             wait_time_after_min_received=int((self.options or {}).get("straggler_wait_s",
                                                                                        STRAGGLER_WAIT_S)))

    def _aggregate_one_result(self, result: FLModel) -> bool:
        try:
            messages.check(messages.TRAIN, result.params, result.metrics, result.meta, self._shapes)
        except messages.MessageRefused as exc:
            self._audit(messages.TRAIN, result, refused=str(exc))
            self.warning(f"refused the round-{self.current_round} message of {(result.meta or {}).get('client_name')}: {exc}")
            return False
        self._audit(messages.TRAIN, result)
        accepted = super()._aggregate_one_result(result)
        if accepted:
            self._round_val.append((result.metrics["val_sse"], result.metrics["n_val"]))
        return accepted

    def update_model(self, model, aggr_result):
        if self._received_count < self.min_clients:
            raise RuntimeError(f"round {self.current_round}: {self._received_count} site(s) answered, fewer than "
                               f"min_clients {self.min_clients}")
        self._record_validation(self.current_round, self._round_val)     # the model sent this round
        model = super().update_model(model, aggr_result)
        self._global = {k: v for k, v in model.params.items()}
        folder = Path(self.state_dir)
        state.save_weights(folder / state.GLOBAL, self._global)
        self._progress["completed_rounds"] = self.current_round + 1
        state.write_progress(folder, self._progress)
        return model

    def save_model(self, model) -> None:
        """Saving happens in ``update_model`` (every round, with the progress)."""

    # --- the end ---------------------------------------------------------------------------
    def _ask(self, task: str, params: dict, meta: dict | None = None) -> dict:
        """Send ``task`` with ``params`` to every site; the checked answers by site."""
        data = FLModel(params_type=ParamsType.FULL, params=params, current_round=self._recipe.rounds,
                       meta={META_KEY: self.recipe, **(meta or {})})
        results = self.broadcast_model(task_name=task, data=data, min_responses=self.min_clients, blocking=True,
                                       wait_time_after_min_received=int((self.options or {}).get(
                                           "straggler_wait_s", STRAGGLER_WAIT_S)))
        answers = {}
        for result in results:
            site = (result.meta or {}).get("client_name")
            try:
                messages.check(task, result.params, result.metrics, result.meta, self._shapes)
            except messages.MessageRefused as exc:
                self._audit(task, result, refused=str(exc))
                self.warning(f"refused the {task} message of {site}: {exc}")
                continue
            self._audit(task, result)
            answers[site] = result.metrics
        if len(answers) < self.min_clients:
            raise RuntimeError(f"{task}: {len(answers)} site(s) answered, fewer than min_clients {self.min_clients}")
        return answers

    def run(self) -> None:
        from . import assemble, ridge

        self._setup()
        self.current_round = done = self._progress["completed_rounds"]
        if done < self._recipe.rounds:
            self.start_round, self.num_rounds = done, self._recipe.rounds - done
            super().run()
            if self.abort_signal.triggered or self._progress["completed_rounds"] < self._recipe.rounds:
                return
        self.current_round = self._recipe.rounds
        validated = self._ask(messages.VALIDATE, self._global)
        self._record_validation(self._recipe.rounds, [(m["val_sse"], m["n_val"]) for m in validated.values()])
        state.write_progress(self.state_dir, self._progress)
        best = self._progress["best_round"] or self._recipe.rounds
        final = self._global if best == self._recipe.rounds else state.load_weights(Path(self.state_dir) / state.BEST)
        state.save_weights(Path(self.state_dir) / state.FINAL, final)

        parts = [m["ridge_sums"] for m in validated.values() if m.get("ridge_sums")]
        withheld = {site: m["ridge_withheld"] for site, m in validated.items() if m.get("ridge_withheld")}
        baseline, ridge_info = None, {"fitted": False, "sites_sending_sums": len(parts), "withheld": withheld}
        if len(parts) >= 2:
            fitted, info = ridge.fit(parts, assemble.ridge_feature_names())
            baseline = {"names": fitted.names, "mean": fitted.mean.tolist(), "scale": fitted.scale.tolist(),
                        "coef": fitted.coef.tolist(), "intercept": fitted.intercept, "alpha": fitted.alpha}
            ridge_info = {**ridge_info, **info, "fitted": True}
        reports = self._ask(messages.REPORT, final, {RIDGE_KEY: baseline})
        result = {"recipe": self.recipe, "best_round": best, "rounds": self._recipe.rounds,
                  "val_mse_by_round": self._progress["val_mse_by_round"],
                  "resumed_at": self._progress.get("resumed_at", []), "sites": self.sites,
                  "sites_validated": sorted(validated), "sites_reported": sorted(reports),
                  "min_clients": self.min_clients, "ridge": ridge_info, "baseline": baseline, "reports": reports}
        atomic_write_text(Path(self.state_dir) / state.RESULT, json.dumps(result, indent=1))
        assemble.write_model_folder(self.state_dir, self.out_dir, self.options or {})
        self.info(f"model folder written to {self.out_dir} (round {best} of {self._recipe.rounds} chosen)")
