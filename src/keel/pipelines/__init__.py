"""Pipelines as code: ``@keel.step`` functions composed by ``@keel.pipeline``.

The graph comes from the data passed between steps; every step's output is
stored by content and cached under a key that hashes its code, parameters,
input fingerprints, serializer versions and the environment lock.
"""

from keel.pipelines.cache import FileRef
from keel.pipelines.pipeline import Pipeline, pipeline
from keel.pipelines.runner import PipelineResult, StepFailed, StepResult, resume, run
from keel.pipelines.smoke import sample
from keel.pipelines.step import Step, step
from keel.pipelines.tuning import TuneStep, tune

__all__ = [
    "FileRef",
    "Pipeline",
    "PipelineResult",
    "Step",
    "StepFailed",
    "StepResult",
    "TuneStep",
    "pipeline",
    "resume",
    "run",
    "sample",
    "step",
    "tune",
]
