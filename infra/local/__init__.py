"""The local platform: SageMaker's contracts honoured by local processes and files under MLOPS_HOME."""
