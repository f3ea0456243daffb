"""Sources and the canonical tables every source is converted into.

``schema`` (the four canonical tables: columns, types, what may be null), ``io`` (reading and
writing them as Parquet or CSV), ``validate`` (every problem of a data directory named by file,
column, value and rows; fixed or rejected, and counted), ``summary`` (what a directory holds) and
``adapters`` (Starbucks, Hillstrom, The Complete Journey into the canonical tables).
"""
