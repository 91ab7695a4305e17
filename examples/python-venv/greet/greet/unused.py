"""Never imported by app.py: not trusted, refused if the app opened it inside."""
