from ragpipe.cli import run

run()
