from edge.cli import app

app(prog_name="biolingual-edge")
