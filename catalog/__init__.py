"""The tick catalog: tick-rate streams (ticks, per-tick signals) as hive-partitioned Parquet.

=================  =====================================================================
module             what lives there
=================  =====================================================================
``layout``         paths, file names, file schemas, sort and identity keys, the default dir
``writer``         :class:`~catalog.writer.CatalogWriter`: buffered, deterministic, atomic writes
``dataset``        listing and reading catalog files (partition and file-name pruning)
``reader``         :class:`~catalog.reader.StoreReader`: ticks, signals and bars from the
                   catalog and SQL through one API (exports, replays, the service)
``query``          DuckDB views over the catalog and the SQL store (``run.py query``)
=================  =====================================================================

Bar-rate and relational data (bars, bar-level signals, jobs, quarantine) stay in SQL
(``db/``); the ``catalog`` node kind (``actors/catalog_sink.py``) and the ``recorder``
write here.
"""
