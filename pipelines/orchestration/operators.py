"""`EmbedPipelineOperator`: the Beam provider's Python pipeline operator, fitted to the embedding job."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from airflow.providers.apache.beam.operators import beam as beam_operators
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret

from pipelines.hub.redaction import redact
from pipelines.orchestration import credentials


class _GoogleProviderCheckedAtRun(beam_operators.BeamDataflowMixin):
    """Sits before `BeamDataflowMixin` in the MRO and skips its constructor's Google-provider check."""

    def __init__(self) -> None:
        pass


class EmbedPipelineOperator(beam_operators.BeamRunPythonPipelineOperator, _GoogleProviderCheckedAtRun):
    """`BeamRunPythonPipelineOperator` that runs DirectRunner pipelines without the Google provider, minus empty run options.

    The Google provider is checked only for DataflowRunner runs, and the
    Dataflow configuration is built only for them; with the Google provider
    installed it behaves exactly like its parent. Per-run options in
    `OPTIONAL_OPTIONS` whose template rendered to '' are left out. A module
    handle that needs credentials reaches the embed process through its
    environment, never its command line (see docs/design/orchestration.md).

    Args:
      module_conn_id: an Airflow connection whose credentials the rendered
        `module` handle is sent with.
      module_from_env: the variable of the workers' environment that holds the
        module handle, used when the rendered `module` is ''.
      **kwargs: `BeamRunPythonPipelineOperator`'s arguments.
    """

    OPTIONAL_OPTIONS = ("reuse", "report_compare")

    def __init__(self, *, module_conn_id: str | None = None, module_from_env: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.module_conn_id = module_conn_id
        self.module_from_env = module_from_env

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
        with self._module_option(self.pipeline_options.pop("module", None) or ""):
            return super().execute(context)

    @contextlib.contextmanager
    def _module_option(self, handle: str) -> Iterator[None]:
        """Tells the embed process its module: `--module`, or `--module-from-env` and the handle in its environment.

        Args:
          handle: the rendered, credential-free `module` option; '' when the
            handle is in the workers' environment (`module_from_env`).

        Raises:
          AirflowFailException: the handle holds credentials, there is no
            handle, or the connection cannot authenticate it.
        """
        if credentials.secrets_in(handle):
            raise AirflowFailException(
                f"Module handle {redact(handle)!r} holds credentials; they would reach the task's log. "
                "Give the job a module_conn_id (an Airflow connection holding them) instead."
            )
        if handle and not self.module_conn_id:
            self.pipeline_options["module"] = handle
            yield
            return
        if not handle:
            if not self.module_from_env:
                raise AirflowFailException("The plan gave no module handle and the job names no module_from_env.")
            self.pipeline_options["module_from_env"] = self.module_from_env
            yield
            return
        assert self.module_conn_id  # for mypy: set when a handle reaches here
        connection = BaseHook.get_connection(self.module_conn_id)
        try:
            authenticated = credentials.authenticated_handle(handle, connection, self.module_conn_id)
        except credentials.CredentialsError as e:
            raise AirflowFailException(str(e)) from None
        for secret in (authenticated, *credentials.secret_values(connection)):
            mask_secret(secret)
        self.pipeline_options["module_from_env"] = credentials.MODULE_HANDLE_ENV
        self.deferrable = False  # a deferred pipeline runs in the triggerer, without this process's environment
        previous = os.environ.get(credentials.MODULE_HANDLE_ENV)
        os.environ[credentials.MODULE_HANDLE_ENV] = authenticated
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(credentials.MODULE_HANDLE_ENV, None)
            else:
                os.environ[credentials.MODULE_HANDLE_ENV] = previous
