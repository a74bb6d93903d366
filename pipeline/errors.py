"""User-facing errors. The CLI turns these into one-line messages; anything else is a bug (traceback)."""

from __future__ import annotations


class PipelineError(Exception):
    """A problem the user can fix: bad input, bad config, missing artifact. Exit code 1."""

    exit_code = 1


class ConfigError(PipelineError):
    """One or more config problems, all reported at once."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} config problems: " + "; ".join(self.problems)
        super().__init__(msg)


class DataError(PipelineError):
    """A dataset file or directory is missing or malformed."""


class MissingArtifactError(PipelineError):
    """A stage's input does not exist yet; the message names the command that produces it."""


class StaleArtifactError(PipelineError):
    """A stage's input changed since it was produced."""


class BackendUnavailable(PipelineError):
    """An optional runtime (TensorRT, CUDA, onnxruntime-gpu) was required but is not usable here."""


class TrainingDiverged(PipelineError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class CheckFailed(PipelineError):
    """A stage ran but a tolerance, parity or sparsity-pattern check failed. Exit code 3."""

    exit_code = 3

    def __init__(self, message: str, report_path: str | None = None):
        self.report_path = report_path
        super().__init__(message if report_path is None else f"{message} (report: {report_path})")
