Feature: The model catalog and provisioning
  An operator provisions a model file onto a host with `llorch provision model`; the
  host offers it, the fleet's catalog lists it with its facts and the hosts that hold
  it, it can be verified, deployed and retired. A file whose digest does not match is
  never registered. Each host is its own network namespace: "host-a" and "host-b",
  each with a 1 GiB simulated GPU; both hold the model "tiny" from their configuration.

  Background:
    Given a fleet of the hosts "host-a" and "host-b"

  @API-12 @CAT-02 @FLT-04
  Scenario: The catalog lists every host's models with their facts and answers 304 when unchanged
    Then the catalog lists the model "tiny" held by "host-a" and "host-b"
    And the catalog entry "tiny" is "Active" with a sha256, the architecture "llama" and a trained context of 32768
    And asking for the catalog again with its ETag answers 304
    When the operator verifies the model "tiny"
    Then the verification succeeds on "host-a" and "host-b"
    And the catalog entry "tiny" records when it was verified

  @PRV-01 @CLI-02 @PRV-03
  Scenario: A model provisioned on one host is offered to the fleet and serves a deployment
    When the operator provisions a new model file as "fresh" on "host-b" with the CLI
    Then the CLI narrates the steps "verify", "inspect" and "register"
    And the catalog lists the model "fresh" held by "host-b"
    When the operator applies the deployment "fresh-dep" of "fresh" with 1 to 1 replicas on "host-b"
    Then the deployment "fresh-dep" has 1 ready pool
    And a job for "fresh-dep" completes

  @PRV-01
  Scenario: A model file whose digest does not match is refused with both digests and not registered
    When the operator provisions a new model file as "tampered" on "host-a" with the CLI and a wrong sha256
    Then the CLI fails showing the expected and the actual sha256
    And the catalog does not list the model "tampered"

  @API-12
  Scenario: A retired model takes no new jobs until it is made active again
    Given the operator applies the deployment "t" of "tiny" with 1 to 1 replicas on "host-a"
    And the deployment "t" has 1 ready pool
    When the operator sets the model "tiny" to "Retired"
    Then a job for "t" is refused at once with 403 "FORBIDDEN"
    When the operator sets the model "tiny" to "Active"
    Then a job for "t" completes
