Feature: Deployments across a fleet of hosts
  An operator declares a deployment (model, context, replica bounds, placement policy)
  and the orchestrator places its pools on hosts that have room, loads a deployment
  scaled to zero on its first job, unloads idle pools, adds a replica when jobs queue
  up, and says per host why a deployment that fits nowhere is pending.
  Each host is its own network namespace with its own address: "host-a" with a 1 GiB
  simulated GPU, "host-b" with 600 MiB and "host-c" with 8 GiB; all hold the model "tiny".

  Background:
    Given a fleet of the hosts "host-a", "host-b" and "host-c"

  @PLC-06 @API-11
  Scenario: A job for a deployment scaled to zero loads a pool, and the idle pool unloads
    Given the operator applies the deployment "lazy" of "tiny" with 0 to 1 replicas on "host-a", unloaded after 1500 ms idle
    Then the deployment "lazy" is "idle" with no pools
    When a client submits a job for "lazy"
    Then the job's started event reports the time spent loading the pool
    And the job completes on a pool of "lazy"
    And the deployment "lazy" unloads its idle pool
    And the deployment "lazy" is "idle" with no pools

  @PLC-06
  Scenario: Jobs queueing up for a deployment add a replica up to its maximum
    Given the operator applies the deployment "busy" of "tiny" with 1 to 2 replicas and a context of 16384 tokens on "host-c"
    And the deployment "busy" has 1 ready pool
    When a client submits 3 long jobs for "busy"
    Then the deployment "busy" grows to 2 ready pools
    And the jobs for "busy" all complete, on 2 different pools

  @PLC-04 @API-11
  Scenario: A deployment that fits on no host is pending with a reason per host and device
    When the operator applies the deployment "huge" of "tiny" needing a context of 1048576 tokens on a GPU
    Then the deployment "huge" is "pending" with no pools
    And the deployment "huge" is pending on "host-a" device "gpu0" with a reason containing "needs"
    And the deployment "huge" is pending on "host-b" device "gpu0" with a reason containing "free of"
    And the deployment "huge" is pending on "host-a" device "cpu" with a reason containing "device is a cpu"

  @PLC-04 @API-11
  Scenario: A deployment of a model no host holds is pending with that reason
    When the operator applies the deployment "ghost" of "no-such-model"
    Then the deployment "ghost" is "pending" with no pools
    And the deployment "ghost" is pending with the reason "no host holds model 'no-such-model'"

  @PLC-04 @FLT-04
  Scenario: Spread puts each replica on its own host and each serves from its host's address
    Given the operator applies the deployment "wide" of "tiny" with 2 to 2 replicas spread over GPUs
    Then the deployment "wide" has 2 ready pools on 2 different hosts
    And each pool of "wide" is advertised at its own host's address
    And a job pinned to each pool of "wide" completes
