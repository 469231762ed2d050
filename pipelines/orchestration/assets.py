"""The Airflow Assets of hub-embed: published modules (`hub-module://<name>`) and job tables (`hub-embed-table://<config>`)."""

from __future__ import annotations

import urllib.parse

from airflow.sdk import Asset, AssetAlias

MODULE_ASSET_SCHEME = "hub-module"
TABLE_ASSET_SCHEME = "hub-embed-table"
MODULE_RELEASES = AssetAlias("hub-module-releases")
"""Alias the fine-tune DAG's publish task emits module Asset events through (the name is only known at run time)."""


def module_asset(name: str) -> Asset:
    """The Asset of a published module: `hub-module://<name>`."""
    return Asset(uri=f"{MODULE_ASSET_SCHEME}://{name}")


def is_module_asset(asset: object) -> bool:
    """True for a `hub-module://` Asset."""
    return isinstance(asset, Asset) and asset.uri.startswith(f"{MODULE_ASSET_SCHEME}://")


def module_name_of_asset(asset: Asset) -> str:
    """`hub-module://<name>` -> `<name>`."""
    return urllib.parse.urlsplit(asset.uri).netloc


def table_asset(config_name: str, output_base: str) -> Asset:
    """The Asset of a job's tables: named `hub-embed-table://<config>`, its URI the output base.

    Args:
      config_name: the job config's name (its file name without extension).
      output_base: the folder its runs write their tables under; a local path becomes a `file://` URI.
    """
    uri = output_base if urllib.parse.urlsplit(output_base).scheme else "file://" + output_base
    return Asset(name=f"{TABLE_ASSET_SCHEME}://{config_name}", uri=uri)
