from sinkfleet.cli.app import main

main()
