"""Option A's AWS side: boto3 steps that create, find by tag and tear down a GPU deployment."""
