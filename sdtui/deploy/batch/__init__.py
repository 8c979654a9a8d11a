"""Scale-out (--option batch): a prompt file over N GPUs as an AWS Batch array job. One module
per resource, each a floor above what it uses, like deploy/aws/ (whose session, bucket, IAM,
pricing and naming it reuses)."""
