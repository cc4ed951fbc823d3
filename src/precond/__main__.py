from precond.demo import main

main()
