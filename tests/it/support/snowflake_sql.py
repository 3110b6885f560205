"""Run SQL against a fakesnow server with Snowflake's official Python connector.

stdin: {"port": PORT, "statements": ["...", ...]}; stdout: the last statement's rows as
JSON (values the connector returned, rendered with str() when JSON has no type for them).
Used by tests/it/support/snowflake.rs to set up and read back what flagstream wrote.
"""
import json
import sys

import snowflake.connector

request = json.load(sys.stdin)
connection = snowflake.connector.connect(
    user="tester", password="unused", account="fakesnow", host="127.0.0.1",
    port=request["port"], protocol="http", session_parameters={},
)
rows = []
with connection.cursor() as cursor:
    for statement in request["statements"]:
        cursor.execute(statement)
        rows = cursor.fetchall() if cursor.description else []
json.dump([list(row) for row in rows], sys.stdout, default=str)
