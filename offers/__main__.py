from offers.cli import main

main()
