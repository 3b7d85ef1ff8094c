from mcu_ids.cli import main

main()
