from aent_cli.cli.app import main

main()
