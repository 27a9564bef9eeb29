from export.cli import app

app(prog_name="biolingual-export")
