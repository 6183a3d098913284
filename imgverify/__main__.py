from imgverify.cli import run

run()
