"""Read the objects a flagstream object destination wrote with a reader we did not write.

Usage: object_reader.py '<request JSON>'; prints one JSON document on stdout:
  {"tables": {table: {"types": {column: [type, nullable]},
                      "columns": {column: [value per row]},
                      "filter_counts": [n, ...]}},
   "sql_rows": [[...]] or null}

Request fields:
  reader   "duckdb" or "pyarrow"
  format   "parquet", "csv", "ndjson", "ndjson.gz" or "ndjson.zst"
  source   a directory, or "s3://bucket/prefix" (with "s3": {"endpoint": "host:port"})
  tables   {table: {"columns": [...], "filters": [[column, value], ...]}}: the warehouse
           tables to read (for Parquet its directory, for the row formats a filter on the
           "table" column): the columns to return (those the files have, plus the Hive
           partition columns dt and hour) and the equality filters to count
  sql      optional DuckDB statements (`;`-separated) to run as they are (the documented
           example): the rows of the last one are returned

Values: timestamps become Unix milliseconds (int, converted by the reader itself), everything
else stays as the reader typed it (CSV is read as text).
"""

import glob
import json
import os
import sys

EXTENSION = {
    "parquet": "parquet",
    "csv": "csv",
    "ndjson": "ndjson",
    "ndjson.gz": "ndjson.gz",
    "ndjson.zst": "ndjson.zst",
}
COMPRESSION = {"ndjson.gz": "gzip", "ndjson.zst": "zstd"}
PARTITIONS = ["dt", "hour"]


def wanted(spec, available):
    """The requested columns the reader has, plus the partition columns."""
    return [c for c in spec["columns"] + PARTITIONS if c in available]


def duckdb_connection(request):
    import duckdb

    con = duckdb.connect()
    s3 = request.get("s3")
    if s3:
        import duckdb_extension_httpfs

        base = os.path.dirname(duckdb_extension_httpfs.__file__)
        path = glob.glob(os.path.join(base, "extensions", "*", "httpfs.duckdb_extension"))[0]
        con.execute(f"LOAD '{path}'")
        con.execute(
            "CREATE SECRET moto (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
            f"ENDPOINT '{s3['endpoint']}', URL_STYLE 'path', USE_SSL false)"
        )
    return con


def duckdb_relation(con, request, table):
    """The relation to query for `table` and the condition selecting its rows. Row formats
    hold every table in the same files: they are scanned once into a temporary table."""
    fmt, source = request["format"], request["source"]
    if fmt == "parquet":
        return (
            f"read_parquet('{source}/{table}/**/*.parquet', hive_partitioning = true)",
            "true",
        )
    files = f"{source}/**/*.{EXTENSION[fmt]}"
    if fmt == "csv":
        scan = f"read_csv('{files}', header = true, all_varchar = true, union_by_name = true)"
    else:
        scan = f"read_ndjson('{files}', sample_size = -1, union_by_name = true)"
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS all_rows AS SELECT * FROM {scan}")
    return "all_rows", f"\"table\" = '{table}'"


def duckdb_table(con, request, table, spec):
    relation, where = duckdb_relation(con, request, table)
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    types = {row[0]: [row[1], row[2] == "YES"] for row in described}
    names = wanted(spec, types)
    # Timestamps as Unix ms in SQL: DuckDB hands TIMESTAMPTZ to Python only through pytz.
    select = ", ".join(
        f'epoch_ms("{n}")' if types[n][0].startswith("TIMESTAMP") else f'"{n}"' for n in names
    )
    rows = con.execute(f"SELECT {select} FROM {relation} WHERE {where}").fetchall()
    columns = {n: [row[i] for row in rows] for i, n in enumerate(names)}
    counts = [
        con.execute(
            f"SELECT count(*) FROM {relation} WHERE {where} AND \"{column}\" = ?", [value]
        ).fetchone()[0]
        for column, value in spec["filters"]
    ]
    return {"types": types, "columns": columns, "filter_counts": counts}


def read_duckdb(request):
    con = duckdb_connection(request)
    tables = {
        table: duckdb_table(con, request, table, spec)
        for table, spec in request["tables"].items()
    }
    sql_rows = None
    if request.get("sql"):
        statements = [s for s in request["sql"].split(";") if s.strip()]
        for statement in statements[:-1]:
            con.execute(statement)
        sql_rows = [list(row) for row in con.execute(statements[-1]).fetchall()]
    return {"tables": tables, "sql_rows": sql_rows}


def pyarrow_files(request):
    fmt, source = request["format"], request["source"]
    pattern = os.path.join(source, "**", f"*.{EXTENSION[fmt]}")
    return sorted(glob.glob(pattern, recursive=True))


def pyarrow_parquet(request, table):
    import pyarrow.dataset as ds

    source = request["source"]
    filesystem = None
    path = f"{source}/{table}"
    if source.startswith("s3://"):
        from pyarrow import fs

        filesystem = fs.S3FileSystem(
            access_key="test", secret_key="test", region="us-east-1",
            endpoint_override=request["s3"]["endpoint"], scheme="http",
        )
        path = path[len("s3://"):]
    dataset = ds.dataset(path, format="parquet", partitioning="hive", filesystem=filesystem)
    return dataset.to_table(), dataset.schema


def pyarrow_rows_formats(request):
    """Every table of a row format (all tables share its files), read once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    files = [read_row_file(request["format"], path) for path in pyarrow_files(request)]
    whole = pa.concat_tables(files, promote_options="permissive")
    for table in request["tables"]:
        part = whole.filter(pc.equal(whole["table"], table))
        yield table, (part, part.schema)


def read_row_file(fmt, path):
    import pyarrow as pa

    if fmt == "csv":
        import csv as pycsv
        import pyarrow.csv as pacsv

        with open(path, newline="") as f:
            header = next(pycsv.reader(f))
        options = pacsv.ConvertOptions(column_types={name: pa.string() for name in header})
        return pacsv.read_csv(path, convert_options=options)
    import pyarrow.json as pajson

    with pa.input_stream(path, compression=COMPRESSION.get(fmt)) as stream:
        return pajson.read_json(stream)


def pyarrow_result(table, schema, spec):
    import pyarrow as pa
    import pyarrow.compute as pc

    types = {f.name: [str(f.type), f.nullable] for f in schema}
    columns = {}
    for name in wanted(spec, types):
        column = table[name]
        if pa.types.is_timestamp(column.type):
            column = pc.cast(pc.cast(column, pa.timestamp("ms", tz=column.type.tz)), pa.int64())
        columns[name] = column.to_pylist()
    counts = [pc.sum(pc.equal(table[c], v)).as_py() or 0 for c, v in spec["filters"]]
    return {"types": types, "columns": columns, "filter_counts": counts}


def read_pyarrow(request):
    if request["format"] == "parquet":
        read = ((t, pyarrow_parquet(request, t)) for t in request["tables"])
    else:
        read = pyarrow_rows_formats(request)
    tables = {
        table: pyarrow_result(data, schema, request["tables"][table])
        for table, (data, schema) in read
    }
    return {"tables": tables, "sql_rows": None}


def main():
    request = json.loads(sys.argv[1])
    read = read_duckdb if request["reader"] == "duckdb" else read_pyarrow
    json.dump(read(request), sys.stdout, default=str)


if __name__ == "__main__":
    main()
