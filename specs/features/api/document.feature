Feature: The API document
  A client developer reads the API's contract from the server itself, as YAML, as JSON,
  or as a documentation page that loads nothing from anywhere else.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @API-18
  Scenario: The API document is served to anyone as YAML and as the same JSON
    Given I use no key
    When I fetch "/openapi.yaml"
    Then the answer is 200 of type "application/yaml"
    And it is the contract checked in as specs/openapi/llorch.yaml
    When I fetch "/openapi.json"
    Then the answer is 200 of type "application/json"
    And it is the same document as the YAML, declaring bearer authentication

  @API-18
  Scenario: The documentation page loads everything it needs from the orchestrator
    Given I use no key
    When I fetch "/docs"
    Then the answer is 200 of type "text/html"
    And every script, stylesheet and image the page names is served by the orchestrator
