from fcn_deploy.cli import main

main(prog_name="fcn-deploy")
