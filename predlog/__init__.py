"""The prediction log: what the service answered, kept in a real database (SQLite by default, PostgreSQL when
a database URL is set), read back by the log routes, reviewed on the page and exported as training data.

- :mod:`predlog.schema`: the tables, versioned, with their migrations (for both databases);
- :mod:`predlog.store`: one class per database behind one interface: write rows, read them with filters and a
  cursor, label one, purge by age;
- :mod:`predlog.rows`: a prediction as rows (one an item), its input compressed;
- :mod:`predlog.query`: the filters of ``GET /models/{name}/log``, checked, and the cursor;
- :mod:`predlog.dataset`: the reviewed inputs as a training set (``python -m modelstore dataset``).

It imports NumPy and the database drivers only: the service, the model store's command line and the tests use it.
"""
