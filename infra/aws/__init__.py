"""The AWS platform: every boto3 call of the project lives in this package, one module per responsibility.

session    settings, boto3 session and clients (retries, AWS_ENDPOINT_URL), credential check
errors     AWS error codes -> the project's exceptions, with the fix in the message
plan       requests as data (`Call`), executed live or printed by a dry run
storage    S3: datasets under content-addressed prefixes, artifacts
images     ECR + the docker SDK: build, tag with the git SHA, push, digest
training   CreateTrainingJob (spot, checkpoints, metric definitions), describe, cost
watch      waiting on a job: status transitions, CloudWatch log streaming, stop on Ctrl-C
tuning     Bayesian hyperparameter tuning
registry   SageMaker Model Registry
modes      endpoint modes (realtime, serverless, async) and their limits, checked before any call
endpoints  endpoint requests: model, config, alarms, DeploymentConfig, autoscaling, invoke, delete
rollout    one deploy: create or blue/green update, wait, silent-rollback detection, smoke test
cleanup    what the project owns, what is idle or orphaned
costs      instance prices, job and endpoint cost
platform   AwsPlatform: the pipeline's platform protocol, composed from the modules above
"""
