Feature: Cordoning hosts and devices
  An operator cordons a host, or a single device of a host, so that no new pool is
  placed there; pools already there keep serving; the cordon survives a restart of the
  host's pool manager and can be lifted. Each host is its own network namespace:
  "host-a" and "host-b" with a 1 GiB simulated GPU each; both hold the model "tiny".

  Background:
    Given a fleet of the hosts "host-a" and "host-b"

  @POOL-08 @PLC-04 @FLT-04 @CLI-03
  Scenario: A cordoned host receives no new pool, and its running pool keeps serving
    Given the operator applies the deployment "first" of "tiny" with 1 to 1 replicas on "host-a"
    And the deployment "first" has 1 ready pool
    When the operator cordons the host "host-a"
    And the operator applies the deployment "second" of "tiny" with 1 to 1 replicas on "host-a"
    Then the deployment "second" is "pending" with no pools
    And the deployment "second" is pending on "host-a" device "*" with a reason containing "host is cordoned"
    When the operator runs "llorch deploy show second"
    Then the command succeeds
    And the command prints "pending" and "host is cordoned"
    And a job for "first" completes
    When the operator lifts the cordon of the host "host-a"
    Then the deployment "second" has 1 ready pool

  @POOL-08 @PLC-04
  Scenario: A cordoned device receives no new pool while the host's other devices do
    When the operator cordons the device "gpu0" of the host "host-b"
    And the operator applies the deployment "gpu-only" of "tiny" with 1 to 1 replicas on "host-b", on a GPU
    Then the deployment "gpu-only" is "pending" with no pools
    And the deployment "gpu-only" is pending on "host-b" device "gpu0" with a reason containing "device is cordoned"
    And the hosts list shows the device "gpu0" of "host-b" cordoned
    When the operator applies the deployment "any-device" of "tiny" with 1 to 1 replicas on "host-b"
    Then the deployment "any-device" has 1 ready pool on the device "cpu"

  @POOL-08
  Scenario: A cordon survives a restart of the host's pool manager
    When the operator cordons the host "host-b"
    And the pool manager of "host-b" restarts
    Then the hosts list shows "host-b" live and cordoned
    When the operator lifts the cordon of the host "host-b"
    Then the hosts list shows "host-b" live and not cordoned
