from textsuite.cli import main

main()
