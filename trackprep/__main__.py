from trackprep.cli import main

main()
