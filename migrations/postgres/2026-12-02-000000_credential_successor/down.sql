DROP TABLE credential_successors;
