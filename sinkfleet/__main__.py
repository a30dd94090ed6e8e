from sinkfleet.cli import main

main()
