"""`EmbedPipelineOperator`: the Beam provider's Python pipeline operator, fitted to the embedding job."""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.beam.operators import beam as beam_operators


class _GoogleProviderCheckedAtRun(beam_operators.BeamDataflowMixin):
    """Sits before `BeamDataflowMixin` in the MRO and skips its constructor's Google-provider check."""

    def __init__(self) -> None:
        pass


class EmbedPipelineOperator(beam_operators.BeamRunPythonPipelineOperator, _GoogleProviderCheckedAtRun):
    """`BeamRunPythonPipelineOperator` that runs DirectRunner pipelines without the Google provider, minus empty run options.

    The Google provider is checked only for DataflowRunner runs, and the
    Dataflow configuration is built only for them; with the Google provider
    installed it behaves exactly like its parent. Per-run options in
    `OPTIONAL_OPTIONS` whose template rendered to '' are left out (see
    docs/design/orchestration.md for both).
    """

    OPTIONAL_OPTIONS = ("reuse",)

    def _is_dataflow(self) -> bool:
        return self.runner.lower() == "dataflowrunner"

    def _cast_dataflow_config(self) -> None:
        if self._is_dataflow() or beam_operators.GOOGLE_PROVIDER:
            super()._cast_dataflow_config()

    def execute(self, context: Any) -> Any:
        """Runs the pipeline; DataflowRunner without the Google provider fails here, naming the missing package."""
        if self._is_dataflow() and not beam_operators.GOOGLE_PROVIDER:
            raise beam_operators.AirflowOptionalProviderFeatureException(
                "DataflowRunner needs apache-airflow-providers-google on the Airflow workers."
            )
        for key in self.OPTIONAL_OPTIONS:
            if self.pipeline_options.get(key) == "":
                del self.pipeline_options[key]
        return super().execute(context)
