BEGIN;
UPDATE staff SET salary = salary + 5000 WHERE role = 'engineer';
INSERT INTO staff (name, role, salary) VALUES ('Dave Undisclosed', 'intern', 30000);
DELETE FROM staff WHERE name = 'Bob Secretive';
COMMIT;
