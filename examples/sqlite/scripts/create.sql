CREATE TABLE IF NOT EXISTS staff (id INTEGER PRIMARY KEY, name TEXT NOT NULL, role TEXT, salary INTEGER);
INSERT INTO staff (name, role, salary) VALUES ('Alice Confidential', 'engineer', 120000);
INSERT INTO staff (name, role, salary) VALUES ('Bob Secretive', 'analyst', 95000);
INSERT INTO staff (name, role, salary) VALUES ('Carol Classified', 'manager', 150000);
