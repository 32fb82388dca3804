from phxq.cli import main

main()
