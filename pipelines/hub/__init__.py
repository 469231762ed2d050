"""TF Hub modules: resolving handles into a local cache, loading modules, describing, checking and calling them.

Resolving: `registry.resolve(handle)` asks each resolver (`local_resolver`,
`http_resolver`, `object_store_resolver`; contract in `resolver`) in turn;
remote modules land in `module_cache`, guarded by `locks`, unpacked by
`extraction` within `limits`, identified by `fingerprints` and checked by
`cache_entries` before use. Using: `loading.load`,
`description.describe`, `binding.bind`; `op_gate.check` refuses modules whose
ops reach outside the computation.
"""
